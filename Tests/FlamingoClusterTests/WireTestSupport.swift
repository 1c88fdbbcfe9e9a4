import FlamingoCore
import FlamingoCluster
import Testing

/// A minimal protobuf writer, so tests can craft envelopes the Swift encoder refuses to make.
/// Field numbers follow proto/flamingo.proto.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: Int, wireType: Int) { varint(UInt64(field << 3 | wireType)) }

    /// A varint field (uint32/uint64/int32/int64/enum/bool); negative values as protobuf does (10 bytes).
    mutating func int(_ field: Int, _ value: Int64) {
        tag(field, wireType: 0)
        varint(UInt64(bitPattern: value))
    }

    mutating func lengthDelimited(_ field: Int, _ payload: [UInt8]) {
        tag(field, wireType: 2)
        varint(UInt64(payload.count))
        bytes += payload
    }

    mutating func string(_ field: Int, _ value: String) { lengthDelimited(field, Array(value.utf8)) }

    mutating func packed(_ field: Int, _ values: [Int64]) {
        var inner = ProtoWriter()
        for v in values { inner.varint(UInt64(bitPattern: v)) }
        lengthDelimited(field, inner.bytes)
    }
}

enum Craft {
    static func namedTensor(name: String = "t", dtype: Int64 = 1, shape: [Int64], data: [UInt8]) -> [UInt8] {
        var w = ProtoWriter()
        w.string(1, name)
        w.int(2, dtype)
        w.packed(3, shape)
        w.lengthDelimited(4, data)
        return w.bytes
    }

    static func sequence(id: Int64 = 7, start: Int64 = 0, tokenCount: Int64, imageIndex: [Int64] = [],
                         imageCount: Int64 = 0, tokenIDs: [Int64] = []) -> [UInt8] {
        var w = ProtoWriter()
        w.int(1, id)
        w.int(2, start)
        w.int(3, tokenCount)
        if !imageIndex.isEmpty { w.packed(4, imageIndex) }
        w.int(5, imageCount)
        if !tokenIDs.isEmpty { w.packed(6, tokenIDs) }
        return w.bytes
    }

    static func stage(rank: Int64, start: Int64, end: Int64) -> [UInt8] {
        var w = ProtoWriter()
        w.int(1, rank)
        w.int(2, start)
        w.int(3, end)
        return w.bytes
    }

    static func envelope(version: Int64 = Int64(Frame.version), kind: Int64 = 4, sequences: [[UInt8]] = [],
                         tensors: [[UInt8]] = [], extra: (inout ProtoWriter) -> Void = { _ in }) -> [UInt8] {
        var w = ProtoWriter()
        w.int(1, version)
        w.int(2, kind)
        w.int(3, 42)
        for s in sequences { w.lengthDelimited(6, s) }
        for t in tensors { w.lengthDelimited(7, t) }
        extra(&w)
        return w.bytes
    }

    /// A well-formed frame (right magic, length and CRC) around any payload.
    static func frame(_ payload: [UInt8]) -> [UInt8] {
        var out = Frame.magic
        out += le32(UInt32(payload.count))
        out += le32(CRC32C.checksum(payload))
        return out + payload
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

/// Deterministic generator for fuzzing and test data (SplitMix64).
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func rawBytes(_ t: Tensor) -> [UInt8] { t.withUnsafeRawBytes { Array($0) } }

/// A tensor of `dtype` with pseudo-random contents.
func randomTensor(_ shape: [Int], dtype: DType, rng: inout SeededRandom) -> Tensor {
    let values = (0..<shape.reduce(1, *)).map { _ in Float.random(in: -4...4, using: &rng) }
    let f32 = Tensor(values, shape: shape)
    guard dtype != .f32 else { return f32 }
    var t = Tensor(zeros: shape, dtype: dtype)
    t.withUnsafeMutableRawBytes { raw in
        for (i, v) in values.enumerated() {
            let bits = dtype == .bf16 ? floatToBF16(v) : Float16(v).bitPattern
            raw.storeBytes(of: bits, toByteOffset: i * 2, as: UInt16.self)
        }
    }
    return t
}

/// Field-by-field equality, tensors compared bit for bit.
func expectSame(_ a: Message, _ b: Message, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.kind == b.kind, sourceLocation: sourceLocation)
    #expect(a.requestID == b.requestID, sourceLocation: sourceLocation)
    #expect(a.microbatchID == b.microbatchID, sourceLocation: sourceLocation)
    #expect(a.step == b.step, sourceLocation: sourceLocation)
    #expect(a.sequences == b.sequences, sourceLocation: sourceLocation)
    #expect(a.errorMessage == b.errorMessage, sourceLocation: sourceLocation)
    #expect(a.sourceRank == b.sourceRank, sourceLocation: sourceLocation)
    #expect(a.hello == b.hello, sourceLocation: sourceLocation)
    #expect(a.plan == b.plan, sourceLocation: sourceLocation)
    #expect(a.tensors.map(\.name) == b.tensors.map(\.name), sourceLocation: sourceLocation)
    for (x, y) in zip(a.tensors, b.tensors) {
        #expect(x.tensor.dtype == y.tensor.dtype, "\(x.name)", sourceLocation: sourceLocation)
        #expect(x.tensor.shape == y.tensor.shape, "\(x.name)", sourceLocation: sourceLocation)
        #expect(rawBytes(x.tensor) == rawBytes(y.tensor), "\(x.name)", sourceLocation: sourceLocation)
    }
}
