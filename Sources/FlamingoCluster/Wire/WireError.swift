import Foundation

/// Why a frame or message was rejected. Thrown by the decoder for untrusted bytes and by the
/// encoder for a message the decoder would reject, so both ends apply the same rules.
public enum WireError: Error, LocalizedError, Equatable, Sendable {
    /// Fewer bytes than a frame header (12).
    case shortBuffer(needed: Int, available: Int)
    case badMagic([UInt8])
    /// The header's payload length differs from the bytes after the header.
    case lengthMismatch(declared: Int, actual: Int)
    case frameTooLarge(payloadBytes: Int, limit: Int)
    case checksumMismatch(declared: UInt32, computed: UInt32)
    /// protobuf-c could not parse the payload as an Envelope.
    case malformedProtobuf
    /// Parsing would take more memory than the payload justifies (`limit` bytes): a payload
    /// packed with empty submessages or fields, hostile or corrupt.
    case parseMemoryExceeded(limit: Int)
    case unsupportedVersion(Int)
    case unknownKind(Int)
    case unknownDType(name: String, value: Int)
    case emptyTensorName
    case duplicateTensorName(String)
    case tooManyDimensions(name: String, rank: Int)
    case negativeDimension(name: String, shape: [Int64])
    /// The element or byte count of the shape does not fit in 64 bits.
    case dimensionOverflow(name: String, shape: [Int64])
    /// product(shape) × element size ≠ data byte count.
    case shapeMismatch(name: String, shape: [Int], bytes: Int)
    case invalidUTF8(field: String)
    /// A string holds a NUL byte, which protobuf-c's C strings would silently cut off.
    case embeddedNUL(field: String)
    /// A per-token array of a sequence has neither 0 nor `tokenCount` entries.
    case sequenceFieldCount(sequenceID: UInt64, field: String, count: Int, tokenCount: Int)
    case imageIndexOutOfRange(sequenceID: UInt64, token: Int, index: Int, imageCount: Int)
    case negativeTokenID(sequenceID: UInt64, token: Int, id: Int)
    case duplicateSequence(UInt64)
    /// A field's value does not fit the wire type (encoder side) or its range.
    case valueOutOfRange(field: String, value: Int)
    case missingPayload(kind: MessageKind, field: String)
    case invalidStage(rank: UInt32, layerStart: Int, layerEnd: Int)

    public var errorDescription: String? {
        switch self {
        case let .shortBuffer(needed, available):
            "frame too short: \(available) bytes, a frame header needs \(needed)"
        case let .badMagic(bytes):
            "bad frame magic \(bytes.map { String(format: "%02x", $0) }.joined(separator: " ")), expected \"FLM1\" (46 4c 4d 31)"
        case let .lengthMismatch(declared, actual):
            "frame declares a \(declared)-byte payload but \(actual) bytes follow the header"
        case let .frameTooLarge(payloadBytes, limit):
            "frame payload of \(payloadBytes) bytes exceeds the limit of \(limit)"
        case let .checksumMismatch(declared, computed):
            "frame checksum mismatch: header says CRC32C \(hex(declared)), payload has \(hex(computed))"
        case .malformedProtobuf:
            "frame payload is not a valid flamingo.Envelope protobuf"
        case let .parseMemoryExceeded(limit):
            "frame payload would need more than \(limit) bytes of parser memory (corrupt or hostile frame)"
        case let .unsupportedVersion(version):
            "wire protocol version \(version) is not supported (this build speaks \(Frame.version))"
        case let .unknownKind(kind):
            "unknown message kind \(kind)"
        case let .unknownDType(name, value):
            "tensor '\(name)' has unknown dtype \(value)"
        case .emptyTensorName:
            "a tensor has an empty name"
        case let .duplicateTensorName(name):
            "tensor '\(name)' appears more than once"
        case let .tooManyDimensions(name, rank):
            "tensor '\(name)' has \(rank) dimensions; at most \(Frame.maxTensorRank) are allowed"
        case let .negativeDimension(name, shape):
            "tensor '\(name)' has a negative dimension in shape \(shape)"
        case let .dimensionOverflow(name, shape):
            "tensor '\(name)' shape \(shape) overflows 64-bit sizes"
        case let .shapeMismatch(name, shape, bytes):
            "tensor '\(name)' has shape \(shape) but \(bytes) data bytes"
        case let .invalidUTF8(field):
            "field \(field) is not valid UTF-8"
        case let .embeddedNUL(field):
            "field \(field) contains a NUL character"
        case let .sequenceFieldCount(sequenceID, field, count, tokenCount):
            "sequence \(sequenceID): \(field) has \(count) entries; expected 0 or token_count = \(tokenCount)"
        case let .imageIndexOutOfRange(sequenceID, token, index, imageCount):
            "sequence \(sequenceID): token \(token) attends to image \(index), outside -1..<\(imageCount)"
        case let .negativeTokenID(sequenceID, token, id):
            "sequence \(sequenceID): token \(token) has negative id \(id)"
        case let .duplicateSequence(sequenceID):
            "sequence \(sequenceID) appears more than once in one message"
        case let .valueOutOfRange(field, value):
            "field \(field) = \(value) is out of range"
        case let .missingPayload(kind, field):
            "\(kind) message without its \(field) payload"
        case let .invalidStage(rank, layerStart, layerEnd):
            "plan stage on rank \(rank) has invalid layer range \(layerStart)..<\(layerEnd)"
        }
    }
}

private func hex(_ value: UInt32) -> String { String(format: "0x%08X", value) }
