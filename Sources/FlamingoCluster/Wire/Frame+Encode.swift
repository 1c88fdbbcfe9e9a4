extension Frame {
    /// One frame holding `message`. f32 tensors travel as `floatEncoding`; f16/bf16 as they are.
    /// Throws when the message breaks a wire rule (`Message.validate`) or is too large.
    public static func encode(_ message: Message, floatEncoding: FloatEncoding = .f32,
                              maxPayloadBytes: Int = defaultMaxPayloadBytes) throws(WireError) -> [UInt8] {
        try message.validate()
        return try Proto.withPacker(message, floatEncoding: floatEncoding) { (packer) throws(WireError) -> [UInt8] in
            let payloadBytes = packer.packedSize
            guard payloadBytes <= maxPayloadBytes else {
                throw .frameTooLarge(payloadBytes: payloadBytes, limit: maxPayloadBytes)
            }
            return [UInt8](unsafeUninitializedCapacity: headerSize + payloadBytes) { buffer, initialized in
                let frame = UnsafeMutableRawBufferPointer(buffer)
                writeFrame(packer, payloadBytes: payloadBytes, into: frame)
                initialized = headerSize + payloadBytes
            }
        }
    }

    /// Appends one frame holding `message` to `buffer` (see `encode`).
    public static func write(_ message: Message, into buffer: inout [UInt8], floatEncoding: FloatEncoding = .f32,
                             maxPayloadBytes: Int = defaultMaxPayloadBytes) throws(WireError) {
        try message.validate()
        try Proto.withPacker(message, floatEncoding: floatEncoding) { (packer) throws(WireError) in
            let payloadBytes = packer.packedSize
            guard payloadBytes <= maxPayloadBytes else {
                throw .frameTooLarge(payloadBytes: payloadBytes, limit: maxPayloadBytes)
            }
            let start = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: headerSize + payloadBytes))
            buffer.withUnsafeMutableBytes { all in
                writeFrame(packer, payloadBytes: payloadBytes, into: UnsafeMutableRawBufferPointer(rebasing: all[start...]))
            }
        }
    }

    /// Header then payload into `frame`, which is exactly `headerSize + payloadBytes` long.
    private static func writeFrame(_ packer: Proto.EnvelopePacker, payloadBytes: Int, into frame: UnsafeMutableRawBufferPointer) {
        let payload = UnsafeMutableRawBufferPointer(rebasing: frame[headerSize...])
        let written = packer.pack(into: payload)
        precondition(written == payloadBytes, "protobuf-c packed \(written) bytes, sized \(payloadBytes)")
        frame.copyBytes(from: magic)
        writeUInt32(UInt32(payloadBytes), to: frame, at: 4)
        writeUInt32(CRC32C.checksum(UnsafeRawBufferPointer(payload)), to: frame, at: 8)
    }
}

/// One frame holding `message` (`Frame.encode`).
public func encodeFrame(_ message: Message, floatEncoding: FloatEncoding = .f32) throws(WireError) -> [UInt8] {
    try Frame.encode(message, floatEncoding: floatEncoding)
}
