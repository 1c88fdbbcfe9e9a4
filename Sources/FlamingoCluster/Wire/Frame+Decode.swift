extension Frame {
    /// The message in `bytes`, which must be exactly one frame. Checks, in order and before any
    /// allocation sized by the input: header present, magic, length (== bytes after the header,
    /// <= `maxPayloadBytes`), CRC32C, protobuf parse, then every field (`Proto.unpack`).
    public static func read(from bytes: UnsafeRawBufferPointer,
                            maxPayloadBytes: Int = defaultMaxPayloadBytes) throws(WireError) -> Message {
        guard bytes.count >= headerSize else { throw .shortBuffer(needed: headerSize, available: bytes.count) }
        guard bytes.prefix(magic.count).elementsEqual(magic) else { throw .badMagic(Array(bytes.prefix(magic.count))) }
        let declared = Int(readUInt32(bytes, at: 4))
        guard declared <= maxPayloadBytes else { throw .frameTooLarge(payloadBytes: declared, limit: maxPayloadBytes) }
        let actual = bytes.count - headerSize
        guard declared == actual else { throw .lengthMismatch(declared: declared, actual: actual) }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[headerSize...])
        let declaredCRC = readUInt32(bytes, at: 8)
        let computedCRC = CRC32C.checksum(payload)
        guard declaredCRC == computedCRC else { throw .checksumMismatch(declared: declaredCRC, computed: computedCRC) }
        return try Proto.unpack(payload)
    }

    public static func read(from bytes: [UInt8], maxPayloadBytes: Int = defaultMaxPayloadBytes) throws(WireError) -> Message {
        try bytes.withUnsafeBufferPointer { (buffer) throws(WireError) -> Message in
            try read(from: UnsafeRawBufferPointer(buffer), maxPayloadBytes: maxPayloadBytes)
        }
    }
}

/// The message in `bytes`, which must be exactly one frame (`Frame.read`).
public func decodeFrame(_ bytes: [UInt8], maxPayloadBytes: Int = Frame.defaultMaxPayloadBytes) throws(WireError) -> Message {
    try Frame.read(from: bytes, maxPayloadBytes: maxPayloadBytes)
}
