/// The frame around one message (DESIGN.md §6):
///
///     | magic "FLM1" 4B | payload length u32 LE 4B | CRC32C(payload) u32 LE 4B | payload |
///
/// The payload is one protobuf `flamingo.Envelope` (proto/flamingo.proto). One MPI message
/// carries exactly one frame; stream transports use `probe` to find frame boundaries.
public enum Frame {
    public static let magic: [UInt8] = Array("FLM1".utf8)
    public static let headerSize = 12
    /// Envelope.version this build writes and the only one it reads.
    public static let version: UInt32 = 2
    /// Tensors have at most this many dimensions.
    public static let maxTensorRank = 8
    /// protobuf messages must stay below 2 GiB; receivers may set a lower limit.
    public static let defaultMaxPayloadBytes = Int(Int32.max)

    /// What `probe` found at the start of a byte stream.
    public enum Probe: Equatable, Sendable {
        /// At least this many bytes (in total, from the frame's start) are needed to go on.
        case needMoreData(Int)
        /// A whole frame of this many bytes (header included) is present.
        case complete(frameBytes: Int)
    }

    /// Checks the header at the start of `bytes` (magic, length limit) without touching the
    /// payload, and says how long the frame is or how many bytes are still missing.
    public static func probe(_ bytes: UnsafeRawBufferPointer,
                             maxPayloadBytes: Int = defaultMaxPayloadBytes) throws(WireError) -> Probe {
        let magicBytes = min(bytes.count, magic.count)
        for i in 0..<magicBytes where bytes[i] != magic[i] {
            throw .badMagic(Array(bytes[0..<magicBytes]))
        }
        guard bytes.count >= headerSize else { return .needMoreData(headerSize) }
        let length = Int(readUInt32(bytes, at: 4))
        guard length <= maxPayloadBytes else { throw .frameTooLarge(payloadBytes: length, limit: maxPayloadBytes) }
        let total = headerSize + length
        return bytes.count >= total ? .complete(frameBytes: total) : .needMoreData(total)
    }

    static func readUInt32(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    static func writeUInt32(_ value: UInt32, to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}
