import Foundation
import Testing
import FlamingoCore
import FlamingoCluster

// MARK: CRC32C

@Test func crc32cInstructionEqualsThePortableLoop() throws {
    guard CRC32C.useInstruction else {
        print("skipping: no SSE4.2 crc32 instruction here (or FLAMINGO_KERNELS=portable); the portable loop is checked below")
        return
    }
    var rng = SeededRandom(seed: 7)
    for length in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4096 + 3, 1 << 20] {
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        bytes.withUnsafeBytes { raw in
            #expect(CRC32C.checksum(raw) == CRC32C.portable(raw), "length \(length)")
            // Continuing over two pieces gives the CRC of the whole.
            let cut = length / 3
            let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<cut]))
            #expect(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[cut...]), continuing: first) == CRC32C.portable(raw))
        }
    }
}

@Test func crc32cCheckValue() {
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    #expect(CRC32C.checksum([UInt8]()) == 0)
    // RFC 3720 (iSCSI) B.4 vectors.
    #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
    #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
}

/// Slicing-by-8 against the bit-at-a-time definition, at every length and alignment.
@Test func crc32cMatchesBitwiseTwin() {
    func naive(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }
    var rng = SeededRandom(seed: 1)
    let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
    for start in 0..<9 {
        for end in stride(from: start, through: data.count, by: 7) {
            let slice = data[start..<end]
            #expect(CRC32C.checksum(Array(slice)) == naive(slice))
        }
    }
    // Continuing over a split equals one pass.
    let whole = CRC32C.checksum(data)
    #expect(CRC32C.checksum(Array(data[100...]), continuing: CRC32C.checksum(Array(data[..<100]))) == whole)
}

// MARK: Pinned numbers

/// The Swift enums carry the same numbers as proto/flamingo.proto (the wire carries numbers).
@Test func enumValuesMatchTheProto() throws {
    let protoURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("proto/flamingo.proto")
    let text = try String(contentsOf: protoURL, encoding: .utf8)
    func values(ofEnum name: String) -> [String: Int] {
        guard let start = text.range(of: "enum \(name) {"),
              let end = text.range(of: "}", range: start.upperBound..<text.endIndex) else { return [:] }
        var result: [String: Int] = [:]
        for line in text[start.upperBound..<end.lowerBound].split(separator: "\n") {
            let code = line.split(separator: "//").first ?? ""
            let parts = code.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: ";"))) }
            if parts.count == 2, let value = Int(parts[1]) { result[parts[0]] = value }
        }
        return result
    }
    var kinds = values(ofEnum: "Kind")
    #expect(kinds.removeValue(forKey: "KIND_UNSPECIFIED") == 0)
    #expect(kinds == Dictionary(uniqueKeysWithValues: MessageKind.allCases.map { ($0.description, Int($0.rawValue)) }))
    var dtypes = values(ofEnum: "DType")
    #expect(dtypes.removeValue(forKey: "DTYPE_UNSPECIFIED") == 0)
    // I8 (int8 weight values) never travels between ranks: activations are f32 or bf16.
    #expect(dtypes == Dictionary(uniqueKeysWithValues: DType.allCases.filter { $0 != .i8 }.map { ($0.rawValue, Int($0.wireValue)) }))
    for (name, value) in dtypes { #expect(DType(wireValue: value)?.rawValue == name) }
}

// MARK: Round trips

/// A message of `kind` that uses every field its kind allows, tensors in all three dtypes.
func sampleMessage(_ kind: MessageKind, rng: inout SeededRandom) -> Message {
    var m = Message(kind: kind, requestID: 0xDEAD_BEEF_0000_0001, microbatchID: 3, step: 17, sourceRank: 2)
    m.sequences = [
        SequenceMeta(sequenceID: 11, startPosition: 0, tokenCount: 4, imageIndex: [nil, 0, 0, 1], imageCount: 2,
                     tokenIDs: [1, 32000, 306, 32001]),
        SequenceMeta(sequenceID: 12, startPosition: 100, tokenCount: 1),
        SequenceMeta(sequenceID: UInt64.max, startPosition: Int(UInt32.max) - 2, tokenCount: 2,
                     imageIndex: [nil, nil], tokenIDs: [Int(Int32.max), 0]),
    ]
    m.tensors = [
        NamedTensor(Message.TensorName.hidden, randomTensor([7, 16], dtype: .f32, rng: &rng)),
        NamedTensor("bf16", randomTensor([2, 3, 5], dtype: .bf16, rng: &rng)),
        NamedTensor("f16", randomTensor([9], dtype: .f16, rng: &rng)),
        NamedTensor("scalar", Tensor([2.5], shape: [])),
        NamedTensor("empty", Tensor(zeros: [0, 4096])),
    ]
    switch kind {
    case .hello:
        m.hello = .init(worldSize: 4, modelFingerprint: "idefics-9b:3f2a…", configHash: 0x1234_5678_9ABC_DEF0,
                        softwareVersion: "flamingo 0.1 (swift 6)")
    case .plan:
        m.plan = .init(stages: [.init(rank: 0, layers: 0..<0, ownsInput: true, ownsOutput: false),
                                .init(rank: 1, layers: 0..<16, ownsInput: false, ownsOutput: false),
                                .init(rank: 2, layers: 16..<32, ownsInput: false, ownsOutput: true)],
                       configHash: 99)
    case .error:
        m.errorMessage = "rank 2: out of memory — ünïcödé ok"
    default:
        break
    }
    return m
}

@Test(arguments: MessageKind.allCases)
func roundTripEveryKind(_ kind: MessageKind) throws {
    var rng = SeededRandom(seed: UInt64(kind.rawValue))
    let message = sampleMessage(kind, rng: &rng)
    let frame = try encodeFrame(message)
    expectSame(try decodeFrame(frame), message)
}

@Test func roundTripMinimalMessages() throws {
    for kind in [MessageKind.decode, .cancel, .shutdown, .heartbeat, .logits] {
        let m = Message(kind: kind)
        let frame = try encodeFrame(m)
        expectSame(try decodeFrame(frame), m)
    }
}

@Test func frameLayout() throws {
    let frame = try encodeFrame(Message(kind: .heartbeat, requestID: 1))
    #expect(Array(frame[0..<4]) == Array("FLM1".utf8))
    let length = frame[4..<8].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
    let crc = frame[8..<12].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
    #expect(Int(length) == frame.count - Frame.headerSize)
    #expect(crc == CRC32C.checksum(Array(frame[12...])))
}

@Test func writeAppendsAndProbeFindsBoundaries() throws {
    var rng = SeededRandom(seed: 5)
    let a = sampleMessage(.prefill, rng: &rng)
    let b = Message(kind: .cancel, requestID: 8, sequences: [SequenceMeta(sequenceID: 3, startPosition: 0, tokenCount: 0)])
    var stream: [UInt8] = [0xAA]  // writes append after whatever is there
    try Frame.write(a, into: &stream)
    try Frame.write(b, into: &stream)
    stream.removeFirst()
    #expect(Array(stream.prefix(try encodeFrame(a).count)) == (try encodeFrame(a)))

    var decoded: [Message] = []
    var rest = stream[...]
    while !rest.isEmpty {
        let probe = try Array(rest).withUnsafeBufferPointer { (p) throws(WireError) in try Frame.probe(UnsafeRawBufferPointer(p)) }
        guard case let .complete(n) = probe else { Issue.record("incomplete \(probe)"); return }
        decoded.append(try decodeFrame(Array(rest.prefix(n))))
        rest = rest.dropFirst(n)
    }
    #expect(decoded.count == 2)
    expectSame(decoded[0], a)
    expectSame(decoded[1], b)

    func probe(_ bytes: [UInt8]) throws(WireError) -> Frame.Probe {
        try bytes.withUnsafeBufferPointer { (p) throws(WireError) in try Frame.probe(UnsafeRawBufferPointer(p)) }
    }
    #expect(try probe([]) == .needMoreData(12))
    #expect(try probe(Array("FLM".utf8)) == .needMoreData(12))
    #expect(try probe(Array(stream.prefix(20))) == .needMoreData(try encodeFrame(a).count))
    #expect(throws: WireError.badMagic(Array("FLX".utf8))) { try probe(Array("FLX".utf8)) }
    #expect(throws: WireError.frameTooLarge(payloadBytes: try encodeFrame(a).count - 12, limit: 10)) {
        try stream.withUnsafeBufferPointer { (p) throws(WireError) in try Frame.probe(UnsafeRawBufferPointer(p), maxPayloadBytes: 10) }
    }
}

@Test func bf16FloatEncodingRoundsToNearestEven() throws {
    var rng = SeededRandom(seed: 9)
    var values = (0..<1000).map { _ in Float.random(in: -1000...1000, using: &rng) }
    values += [0, -0, 1, .infinity, -.infinity, 1.00390625, 1.01171875, Float(bitPattern: 0x3F80_8000)]
    let m = Message(kind: .prefill, tensors: [NamedTensor("hidden", Tensor(values, shape: [values.count])),
                                              NamedTensor("kept", randomTensor([3], dtype: .f16, rng: &rng))])
    let f32Frame = try encodeFrame(m)
    let bf16Frame = try encodeFrame(m, floatEncoding: .bf16)
    #expect(bf16Frame.count < f32Frame.count)
    let decoded = try decodeFrame(bf16Frame)
    let hidden = try #require(decoded.tensor(named: "hidden"))
    #expect(hidden.dtype == .bf16)
    let bits = hidden.withUnsafeRawBytes { Array($0.bindMemory(to: UInt16.self)) }
    #expect(bits == values.map(floatToBF16))
    // Ties go to even: 1 + 2^-8 sits halfway between 1 and 1 + 2^-7.
    #expect(bits[values.count - 1] == 0x3F80)
    #expect(decoded.tensor(named: "kept")?.dtype == .f16)
    #expect(rawBytes(try #require(decoded.tensor(named: "kept"))) == rawBytes(m.tensors[1].tensor))
}

// MARK: Decoder rejects each invalid field

func decodeError(_ bytes: [UInt8], maxPayloadBytes: Int = Frame.defaultMaxPayloadBytes) -> WireError? {
    do {
        _ = try decodeFrame(bytes, maxPayloadBytes: maxPayloadBytes)
        return nil
    } catch {
        return error
    }
}

struct InvalidCase: CustomTestStringConvertible, Sendable {
    let label: String
    let frame: [UInt8]
    let expected: WireError
    var testDescription: String { label }
}

let f32x6 = [UInt8](repeating: 0, count: 24)

let invalidCases: [InvalidCase] = {
    let good = try! encodeFrame(Message(kind: .prefill, tensors: [NamedTensor("h", Tensor(zeros: [2, 3]))]))
    let payload = Array(good[12...])
    func patched(_ f: (inout [UInt8]) -> Void) -> [UInt8] { var b = good; f(&b); return b }
    func env(_ tensors: [[UInt8]] = [], sequences: [[UInt8]] = [], kind: Int64 = 4,
             extra: @escaping (inout ProtoWriter) -> Void = { _ in }) -> [UInt8] {
        Craft.frame(Craft.envelope(kind: kind, sequences: sequences, tensors: tensors, extra: extra))
    }
    func tensor(_ shape: [Int64], dtype: Int64 = 1, bytes: Int? = nil, name: String = "t") -> [UInt8] {
        let n = bytes ?? Int(shape.reduce(1, *)) * 4
        return Craft.namedTensor(name: name, dtype: dtype, shape: shape, data: [UInt8](repeating: 0, count: n))
    }
    return [
        // Framing
        .init(label: "empty buffer", frame: [], expected: .shortBuffer(needed: 12, available: 0)),
        .init(label: "11-byte buffer", frame: Array(good.prefix(11)), expected: .shortBuffer(needed: 12, available: 11)),
        .init(label: "bad magic", frame: patched { $0[3] = UInt8(ascii: "2") }, expected: .badMagic(Array("FLM2".utf8))),
        .init(label: "length past the buffer", frame: patched { $0[4] &+= 1 },
              expected: .lengthMismatch(declared: payload.count + 1, actual: payload.count)),
        .init(label: "truncated frame", frame: Array(good.dropLast(5)),
              expected: .lengthMismatch(declared: payload.count, actual: payload.count - 5)),
        .init(label: "trailing bytes", frame: good + [0],
              expected: .lengthMismatch(declared: payload.count, actual: payload.count + 1)),
        .init(label: "length 0xFFFFFFFF", frame: patched { for i in 4..<8 { $0[i] = 0xFF } },
              expected: .frameTooLarge(payloadBytes: Int(UInt32.max), limit: Frame.defaultMaxPayloadBytes)),
        .init(label: "CRC mismatch", frame: patched { $0[$0.count - 1] ^= 0x01 },
              expected: .checksumMismatch(declared: CRC32C.checksum(payload),
                                          computed: CRC32C.checksum(Array(payload.dropLast()) + [payload.last! ^ 1]))),
        // protobuf
        .init(label: "garbage protobuf, right CRC", frame: Craft.frame([0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), expected: .malformedProtobuf),
        .init(label: "field number 0", frame: Craft.frame([0x00, 0x01]), expected: .malformedProtobuf),
        .init(label: "truncated varint", frame: Craft.frame([0x08, 0x80]), expected: .malformedProtobuf),
        .init(label: "tensor length past the payload", frame: Craft.frame(Craft.envelope() + [0x3A, 0x7F, 0x0A]), expected: .malformedProtobuf),
        .init(label: "wrong wire type for version", frame: Craft.frame([0x0A, 0x01, 0x01]), expected: .malformedProtobuf),
        // Envelope fields
        .init(label: "empty payload (version 0)", frame: Craft.frame([]), expected: .unsupportedVersion(0)),
        .init(label: "version 1 (before STATS_REQUEST)", frame: Craft.frame(Craft.envelope(version: 1)), expected: .unsupportedVersion(1)),
        .init(label: "kind 0", frame: env(kind: 0), expected: .unknownKind(0)),
        .init(label: "kind 13", frame: env(kind: 13), expected: .unknownKind(13)),
        .init(label: "kind 300", frame: env(kind: 300), expected: .unknownKind(300)),
        .init(label: "kind -1", frame: env(kind: -1), expected: .unknownKind(-1)),
        .init(label: "HELLO without hello", frame: env(kind: 1), expected: .missingPayload(kind: .hello, field: "hello")),
        .init(label: "PLAN without plan", frame: env(kind: 2), expected: .missingPayload(kind: .plan, field: "plan")),
        .init(label: "plan stage end < start", frame: env(kind: 2, extra: { w in
            var plan = ProtoWriter()
            plan.lengthDelimited(1, Craft.stage(rank: 3, start: 10, end: 4))
            w.lengthDelimited(11, plan.bytes)
        }), expected: .invalidStage(rank: 3, layerStart: 10, layerEnd: 4)),
        .init(label: "error message not UTF-8", frame: env(kind: 8, extra: { w in w.lengthDelimited(8, [0x61, 0xC3, 0x28]) }),
              expected: .invalidUTF8(field: "error_message")),
        // Tensors
        .init(label: "dtype 0", frame: env([tensor([2, 3], dtype: 0)]), expected: .unknownDType(name: "t", value: 0)),
        .init(label: "dtype 4", frame: env([tensor([2, 3], dtype: 4)]), expected: .unknownDType(name: "t", value: 4)),
        .init(label: "dtype -1", frame: env([tensor([2, 3], dtype: -1)]), expected: .unknownDType(name: "t", value: -1)),
        .init(label: "shape × size > bytes", frame: env([tensor([2, 3], bytes: 20)]), expected: .shapeMismatch(name: "t", shape: [2, 3], bytes: 20)),
        .init(label: "shape × size < bytes", frame: env([tensor([2, 3], bytes: 28)]), expected: .shapeMismatch(name: "t", shape: [2, 3], bytes: 28)),
        .init(label: "bf16 counted as f32", frame: env([tensor([2, 3], dtype: 2, bytes: 24)]), expected: .shapeMismatch(name: "t", shape: [2, 3], bytes: 24)),
        .init(label: "negative dimension", frame: env([tensor([-2, -3], bytes: 24)]), expected: .negativeDimension(name: "t", shape: [-2, -3])),
        .init(label: "dimension overflow", frame: env([tensor([1 << 32, 1 << 31], bytes: 0)]),
              expected: .dimensionOverflow(name: "t", shape: [1 << 32, 1 << 31])),
        .init(label: "byte count overflow", frame: env([tensor([Int64.max / 2, 1], bytes: 0)]),
              expected: .dimensionOverflow(name: "t", shape: [Int64.max / 2, 1])),
        // 2^64 / 4 elements × 4 bytes wraps to 0 in unchecked arithmetic: must still be caught.
        .init(label: "overflow wrapping to 0", frame: env([tensor([1 << 31, 1 << 31, 4], bytes: 0)]),
              expected: .dimensionOverflow(name: "t", shape: [1 << 31, 1 << 31, 4])),
        .init(label: "9 dimensions", frame: env([tensor([1, 1, 1, 1, 1, 1, 1, 1, 1])]), expected: .tooManyDimensions(name: "t", rank: 9)),
        .init(label: "empty tensor name", frame: env([tensor([1], name: "")]), expected: .emptyTensorName),
        .init(label: "duplicate tensor name", frame: env([tensor([1], name: "h"), tensor([2], name: "h")]), expected: .duplicateTensorName("h")),
        // Sequences
        .init(label: "image_index count ≠ token_count", frame: env(sequences: [Craft.sequence(tokenCount: 3, imageIndex: [-1, 0], imageCount: 1)]),
              expected: .sequenceFieldCount(sequenceID: 7, field: "image_index", count: 2, tokenCount: 3)),
        .init(label: "token_ids count ≠ token_count", frame: env(sequences: [Craft.sequence(tokenCount: 1, tokenIDs: [5, 6])]),
              expected: .sequenceFieldCount(sequenceID: 7, field: "token_ids", count: 2, tokenCount: 1)),
        .init(label: "image index ≥ image_count", frame: env(sequences: [Craft.sequence(tokenCount: 2, imageIndex: [0, 1], imageCount: 1)]),
              expected: .imageIndexOutOfRange(sequenceID: 7, token: 1, index: 1, imageCount: 1)),
        .init(label: "image index < -1", frame: env(sequences: [Craft.sequence(tokenCount: 1, imageIndex: [-2], imageCount: 1)]),
              expected: .imageIndexOutOfRange(sequenceID: 7, token: 0, index: -2, imageCount: 1)),
        .init(label: "negative token id", frame: env(sequences: [Craft.sequence(tokenCount: 2, tokenIDs: [1, -5])]),
              expected: .negativeTokenID(sequenceID: 7, token: 1, id: -5)),
        .init(label: "positions past UInt32", frame: env(sequences: [Craft.sequence(start: Int64(UInt32.max), tokenCount: 1)]),
              expected: .valueOutOfRange(field: "sequences[0].start_position + token_count", value: Int(UInt32.max) + 1)),
        .init(label: "duplicate sequence", frame: env(sequences: [Craft.sequence(tokenCount: 0), Craft.sequence(tokenCount: 0)]),
              expected: .duplicateSequence(7)),
    ]
}()

@Test(arguments: invalidCases)
func decoderRejects(_ c: InvalidCase) {
    #expect(decodeError(c.frame) == c.expected)
    #expect(c.expected.errorDescription?.isEmpty == false)
}

@Test func tensorNameMustBeUTF8() {
    var t = ProtoWriter()
    t.lengthDelimited(1, [0x68, 0xFF])  // "h\xFF"
    t.int(2, 1)
    let frame = Craft.frame(Craft.envelope(tensors: [t.bytes]))
    #expect(decodeError(frame) == .invalidUTF8(field: "tensors[0].name"))
}

/// protobuf-c allocates a struct per submessage: 2 bytes of wire (an empty tensor entry) cost
/// ~80 bytes of parser memory. The decoder's budget turns that into an error, not an OOM kill.
@Test func parserMemoryIsBounded() {
    var payload = Craft.envelope()
    payload.reserveCapacity(payload.count + 4_000_000)
    for _ in 0..<2_000_000 { payload += [0x3A, 0x00] }  // field 7 (tensors), length 0
    #expect(decodeError(Craft.frame(payload)) == .parseMemoryExceeded(limit: payload.count + 64 << 20))
    // The same shape at a sane size parses and fails on content instead.
    let small = Craft.envelope() + [0x3A, 0x00]
    #expect(decodeError(Craft.frame(small)) == .emptyTensorName)
}

@Test func payloadLimitIsConfigurable() throws {
    let frame = try encodeFrame(Message(kind: .prefill, tensors: [NamedTensor("h", Tensor(zeros: [256]))]))
    #expect(decodeError(frame, maxPayloadBytes: 1000) == .frameTooLarge(payloadBytes: frame.count - 12, limit: 1000))
    #expect(decodeError(frame, maxPayloadBytes: frame.count - 12) == nil)
    #expect(throws: WireError.frameTooLarge(payloadBytes: frame.count - 12, limit: 100)) {
        try Frame.encode(Message(kind: .prefill, tensors: [NamedTensor("h", Tensor(zeros: [256]))]), maxPayloadBytes: 100)
    }
}

@Test func errorMessagesNameTheProblem() {
    #expect(WireError.shapeMismatch(name: "hidden", shape: [4, 4096], bytes: 10).errorDescription
            == "tensor 'hidden' has shape [4, 4096] but 10 data bytes")
    #expect(WireError.badMagic(Array("GET ".utf8)).errorDescription?.contains("47 45 54 20") == true)
    #expect(WireError.checksumMismatch(declared: 1, computed: 0xE306_9283).errorDescription?.contains("0xE3069283") == true)
    #expect(WireError.unsupportedVersion(7).errorDescription?.contains("speaks 2") == true)
}

// MARK: Encoder applies the same rules

@Test func encoderRefusesWhatTheDecoderWouldReject() {
    func encodeError(_ m: Message) -> WireError? {
        do { _ = try encodeFrame(m); return nil } catch { return error }
    }
    let t = Tensor(zeros: [1])
    #expect(encodeError(Message(kind: .hello)) == .missingPayload(kind: .hello, field: "hello"))
    #expect(encodeError(Message(kind: .plan)) == .missingPayload(kind: .plan, field: "plan"))
    #expect(encodeError(Message(kind: .prefill, tensors: [NamedTensor("", t)])) == .emptyTensorName)
    #expect(encodeError(Message(kind: .prefill, tensors: [NamedTensor("a", t), NamedTensor("a", t)])) == .duplicateTensorName("a"))
    #expect(encodeError(Message(kind: .prefill, tensors: [NamedTensor("a", Tensor(zeros: Array(repeating: 1, count: 9)))]))
            == .tooManyDimensions(name: "a", rank: 9))
    let seq = SequenceMeta(sequenceID: 1, startPosition: 0, tokenCount: 2, imageIndex: [nil], imageCount: 0)
    #expect(encodeError(Message(kind: .prefill, sequences: [seq])) == .sequenceFieldCount(sequenceID: 1, field: "image_index", count: 1, tokenCount: 2))
    let seq2 = SequenceMeta(sequenceID: 1, startPosition: -1, tokenCount: 0)
    #expect(encodeError(Message(kind: .prefill, sequences: [seq2])) == .valueOutOfRange(field: "sequences[0].start_position", value: -1))
    let seq3 = SequenceMeta(sequenceID: 1, startPosition: 0, tokenCount: 1, tokenIDs: [Int(Int32.max) + 1])
    #expect(encodeError(Message(kind: .prefill, sequences: [seq3])) == .valueOutOfRange(field: "sequences[0].token_ids[0]", value: Int(Int32.max) + 1))
    let seq4 = SequenceMeta(sequenceID: 1, startPosition: 0, tokenCount: 1, imageIndex: [3], imageCount: 2)
    #expect(encodeError(Message(kind: .prefill, sequences: [seq4])) == .imageIndexOutOfRange(sequenceID: 1, token: 0, index: 3, imageCount: 2))
    #expect(encodeError(Message(kind: .prefill, tensors: [NamedTensor("a\0b", t)])) == .embeddedNUL(field: "tensors[0].name"))
    #expect(encodeError(Message(kind: .error, errorMessage: "x\0")) == .embeddedNUL(field: "error_message"))
    let plan = Message.Plan(stages: [.init(rank: 1, layers: -1..<3, ownsInput: false, ownsOutput: false)], configHash: 0)
    #expect(encodeError(Message(kind: .plan, plan: plan)) == .invalidStage(rank: 1, layerStart: -1, layerEnd: 3))
    // Payloads are checked even on kinds that do not need them (the encoder narrows them anyway).
    #expect(encodeError(Message(kind: .heartbeat, plan: plan)) == .invalidStage(rank: 1, layerStart: -1, layerEnd: 3))
}

// MARK: Mutation fuzzing

/// Valid frames mutated at random (bit flips, byte sets, inserts, deletes, truncation, splices).
/// Half mutate the whole frame; the other half mutate only the payload and then rebuild the
/// header (length, CRC) so the mutants reach the protobuf parser and the field checks. The decoder must return a message or throw a WireError; a
/// crash, trap or sanitizer report fails the run.
@Test func mutatedFramesNeverCrashTheDecoder() throws {
    var rng = SeededRandom(seed: 0xF1A_3160)
    var corpus: [[UInt8]] = []
    for kind in MessageKind.allCases {
        var m = sampleMessage(kind, rng: &rng)
        // Small tensors keep mutants dense with structure rather than float bytes.
        m.tensors = [NamedTensor("hidden", randomTensor([3, 4], dtype: .f32, rng: &rng)),
                     NamedTensor("b", randomTensor([2], dtype: .bf16, rng: &rng))]
        corpus.append(try encodeFrame(m))
        corpus.append(try encodeFrame(Message(kind: kind == .hello || kind == .plan ? .heartbeat : kind, requestID: 5)))
    }

    let iterations = 100_000
    var accepted = 0
    var errors: [String: Int] = [:]
    for i in 0..<iterations {
        var frame = corpus[Int.random(in: 0..<corpus.count, using: &rng)]
        let rounds = Int.random(in: 1...4, using: &rng)
        if i % 2 == 0 {
            var payload = Array(frame[Frame.headerSize...])
            for _ in 0..<rounds { mutate(&payload, rng: &rng) }
            frame = Craft.frame(payload)
        } else {
            for _ in 0..<rounds { mutate(&frame, rng: &rng) }
        }
        do {
            let message = try decodeFrame(frame)
            accepted += 1
            // Whatever is accepted must be re-encodable: decode's rules imply encode's.
            _ = try encodeFrame(message)
        } catch {
            let name = "\(error)".prefix { $0 != "(" }
            errors[String(name), default: 0] += 1
        }
    }
    let summary = errors.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    print("fuzz: \(iterations) mutants, \(accepted) accepted; \(summary)")
    #expect(accepted + errors.values.reduce(0, +) == iterations)
    // The recomputed-CRC half must get past the frame checks into the parser and validators.
    #expect(errors["malformedProtobuf", default: 0] > 1000)
    #expect(errors.keys.filter { !["shortBuffer", "badMagic", "lengthMismatch", "checksumMismatch", "malformedProtobuf", "frameTooLarge"].contains($0) }.count >= 5)
}

private func mutate(_ frame: inout [UInt8], rng: inout SeededRandom) {
    let n = frame.count
    switch Int.random(in: 0..<7, using: &rng) {
    case 0 where n > 0:  // flip one bit
        frame[Int.random(in: 0..<n, using: &rng)] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
    case 1 where n > 0:  // set a byte, often to a boundary value
        let values: [UInt8] = [0x00, 0x01, 0x7F, 0x80, 0xFF]
        frame[Int.random(in: 0..<n, using: &rng)] =
            Bool.random(using: &rng) ? values.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
    case 2:  // insert random bytes
        let bytes = (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        frame.insert(contentsOf: bytes, at: Int.random(in: 0...n, using: &rng))
    case 3 where n > 0:  // delete a run
        let start = Int.random(in: 0..<n, using: &rng)
        frame.removeSubrange(start..<min(n, start + Int.random(in: 1...8, using: &rng)))
    case 4 where n > 0:  // truncate
        frame.removeLast(Int.random(in: 1...min(n, 32), using: &rng))
    case 5 where n > 16:  // duplicate a run elsewhere (splices valid-looking fields)
        let start = Int.random(in: 0..<n - 8, using: &rng)
        let run = Array(frame[start..<start + Int.random(in: 1...8, using: &rng)])
        frame.insert(contentsOf: run, at: Int.random(in: 0...n, using: &rng))
    case 6 where n > 0:  // end in a huge varint / length prefix
        frame.replaceSubrange(Int.random(in: 0..<n, using: &rng)..<n, with: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    default:
        break
    }
}

// MARK: Throughput (printed, not asserted)

@Test func throughputOf16MBTensor() throws {
    var rng = SeededRandom(seed: 16)
    let rows = 4096, columns = 1024  // 4096 × 1024 f32 = 16 MiB
    let hidden = randomTensor([rows, columns], dtype: .f32, rng: &rng)
    let message = Message(kind: .prefill, sequences: [SequenceMeta(sequenceID: 1, startPosition: 0, tokenCount: rows)],
                          tensors: [NamedTensor("hidden", hidden)])
    let megabytes = Double(hidden.byteCount) / 1_048_576
    let clock = ContinuousClock()
    func rate(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()  // warm up
        let elapsed = try clock.measure { for _ in 0..<repeats { try body() } }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return megabytes * Double(repeats) / seconds
    }
    #if DEBUG
    let build = "debug"
    #else
    let build = "release"
    #endif
    let repeats = 5
    var frame: [UInt8] = []
    let crc = rate(repeats) { _ = hidden.withUnsafeRawBytes { CRC32C.checksum($0) } }
    let portableCRC = rate(repeats) { _ = hidden.withUnsafeRawBytes { CRC32C.portable($0) } }
    let encode = try rate(repeats) { frame = try encodeFrame(message) }
    let decode = try rate(repeats) { _ = try decodeFrame(frame) }
    var bf16Frame: [UInt8] = []
    let encodeBF16 = try rate(repeats) { bf16Frame = try encodeFrame(message, floatEncoding: .bf16) }
    let decodeBF16 = try rate(repeats) { _ = try decodeFrame(bf16Frame) }
    func f(_ x: Double) -> String { String(format: "%.0f", x) }
    print("wire throughput (\(build), 16 MiB f32 tensor, MB/s of f32 data): CRC32C \(f(crc)) (\(CRC32C.useInstruction ? "crc32 instruction" : "portable"); portable loop \(f(portableCRC))), "
          + "encode \(f(encode)), decode \(f(decode)), encode+decode \(f(1 / (1 / encode + 1 / decode))); "
          + "bf16 wire: encode \(f(encodeBF16)), decode \(f(decodeBF16)), frame \(bf16Frame.count / 1_048_576) MiB")
    #expect(frame.count > hidden.byteCount)
}
