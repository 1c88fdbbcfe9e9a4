import FlamingoCluster
import FlamingoCore
import Foundation
import FuzzSupport

// A frame as it arrives from another rank (DESIGN.md §6): `Frame.probe` (stream framing), then
// `Frame.read` (header, CRC32C, protobuf-c unpack, field and tensor checks).
//
// Random bytes almost never carry the right length and CRC, so each input also runs a second
// time with its header repaired ("FLM1", the real length, the real CRC of the rest): that is how
// mutations reach the protobuf parser and the message checks.
//
// A frame the decoder accepts must encode again (the two ends apply the same rules), and that
// frame must decode to a message that encodes to the very same bytes.

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    _ = try? Frame.probe(input)
    accept(input)
    if size >= Frame.headerSize {
        var repaired = [UInt8](input)
        repaired.replaceSubrange(0..<4, with: Frame.magic)
        let payloadBytes = size - Frame.headerSize
        let crc = repaired.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[Frame.headerSize...])) }
        withUnsafeBytes(of: UInt32(payloadBytes).littleEndian) { repaired.replaceSubrange(4..<8, with: $0) }
        withUnsafeBytes(of: crc.littleEndian) { repaired.replaceSubrange(8..<12, with: $0) }
        repaired.withUnsafeBytes { accept($0) }
    }
    return 0
}

private func accept(_ frame: UnsafeRawBufferPointer) {
    guard let message = try? Frame.read(from: frame) else { return }
    let again: [UInt8]
    do {
        again = try Frame.encode(message)
    } catch {
        invariant(false, "a decoded message does not encode: \(error)")
        return
    }
    do {
        // Encoding is deterministic, so the second generation must be byte for byte the first.
        let second = try Frame.encode(Frame.read(from: again))
        invariant(second == again, "a re-encoded message decodes differently")
    } catch {
        invariant(false, "a re-encoded message does not decode or encode: \(error)")
    }
}

/// Frames of every kind, written by the product's encoder.
private func seeds() throws -> [(name: String, bytes: Data)] {
    func frame(_ message: Message, _ encoding: FloatEncoding = .f32) throws -> Data { Data(try Frame.encode(message, floatEncoding: encoding)) }
    let hidden = Tensor((0..<12).map { Float($0) * 0.25 - 1 }, shape: [3, 4])
    let sequence = SequenceMeta(sequenceID: 7, startPosition: 0, tokenCount: 3, imageIndex: [nil, 0, 0], imageCount: 1, tokenIDs: [1, 32000, 450])
    var f16 = Tensor(zeros: [2, 2], dtype: .f16)
    f16.withUnsafeMutableRawBytes { raw in
        for (i, v) in [Float16(1), -2, 0.5, 65504].enumerated() { raw.storeBytes(of: v.bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
    }
    let stats = RankStats(rank: 2, role: "stage L1", layerStart: 0, layerEnd: 16, weightBytes: 1 << 30, peakRSSBytes: 3 << 30,
                          computeSeconds: 1.5, waitSeconds: 0.25, bytesSent: 123_456, bytesReceived: 654_321, cacheBytes: 1 << 20)
    return [
        ("hello", try frame(Message(kind: .hello, hello: .init(worldSize: 3, modelFingerprint: "sha256:0123abcd", configHash: 0xDEAD_BEEF,
                                                                softwareVersion: "flamingo 0.1", kernels: "f32:avx2 bf16:avx512bf16")))),
        ("plan", try frame(Message(kind: .plan, plan: .init(stages: [
            .init(rank: 0, layers: 0..<0, ownsInput: true, ownsOutput: false),
            .init(rank: 1, layers: 0..<8, ownsInput: false, ownsOutput: false, tensorParallelRank: 0, tensorParallelSize: 2),
            .init(rank: 2, layers: 0..<8, ownsInput: false, ownsOutput: false, tensorParallelRank: 1, tensorParallelSize: 2),
            .init(rank: 3, layers: 8..<16, ownsInput: false, ownsOutput: true),
        ], configHash: 42)))),
        ("prefill", try frame(Message(kind: .prefill, requestID: 9, microbatchID: 1, sequences: [sequence],
                                      tensors: [NamedTensor(Message.TensorName.hidden, hidden)], sourceRank: 1))),
        ("visual-tokens-bf16", try frame(Message(kind: .visualTokens, requestID: 9, sequences: [sequence],
                                                 tensors: [NamedTensor(Message.TensorName.visualTokens(image: 0), hidden)]), .bf16)),
        ("decode-f16", try frame(Message(kind: .decode, requestID: 9, step: 3,
                                         sequences: [SequenceMeta(sequenceID: 7, startPosition: 3, tokenCount: 1, imageIndex: [0], imageCount: 1, tokenIDs: [29889])],
                                         tensors: [NamedTensor(Message.TensorName.hidden, f16)]))),
        ("logits", try frame(Message(kind: .logits, requestID: 9, step: 3, sequences: [sequence],
                                     tensors: [NamedTensor(Message.TensorName.logits, Tensor([0.5, -1, 2, 0], shape: [1, 4])),
                                               NamedTensor("empty", Tensor(zeros: [0, 4]))]))),
        ("error", try frame(Message(kind: .error, requestID: 9, errorMessage: "stage 2: tensor 'hidden' has shape [3, 4] but 0 data bytes"))),
        ("stats", try frame(Message(kind: .stats, stats: stats))),
        ("cancel", try frame(Message(kind: .cancel, requestID: 9))),
        ("heartbeat", try frame(Message(kind: .heartbeat, sourceRank: 3))),
        ("shutdown", try frame(Message(kind: .shutdown))),
    ]
}

@main struct WireFrameFuzz {
    static func main() { FuzzMain.run(testOneInput, seeds: seeds) }
}
