import Foundation

/// Reading and writing NumPy `.npy` files (format version 1.0/2.0, little-endian f4, C order):
/// the interchange format for logits dumps and PyTorch goldens.
public enum NPY {
    public enum Error: Swift.Error, LocalizedError {
        case unreadable(String)
        case unsupported(String)

        public var errorDescription: String? {
            switch self {
            case .unreadable(let why): "cannot read .npy: \(why)"
            case .unsupported(let why): "unsupported .npy: \(why)"
            }
        }
    }

    /// The bytes of a `.npy` file holding `tensor` as float32.
    public static func encode(_ tensor: Tensor) -> Data {
        let shape = tensor.shape.map(String.init).joined(separator: ", ") + (tensor.rank == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(shape)), }"
        // Pad so the data starts on a 64-byte boundary, header ends with a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        tensor.toF32().withFloats { data.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self), count: $0.count * 4)) }
        return data
    }

    public static func write(_ tensor: Tensor, to url: URL) throws {
        try encode(tensor).write(to: url)
    }

    /// Parses a little-endian float32 (`<f4`) or float64 (`<f8`, narrowed) C-order array.
    public static func decode(_ data: Data) throws -> Tensor {
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw Error.unreadable("bad magic")
        }
        let major = bytes[6]
        let (headerLength, headerStart) = major == 1
            ? (Int(bytes[8]) | Int(bytes[9]) << 8, 10)
            : (bytes.count >= 12 ? Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24 : -1, 12)
        guard headerLength >= 0, headerStart + headerLength <= bytes.count,
              let header = String(bytes: bytes[headerStart..<(headerStart + headerLength)], encoding: .ascii) else {
            throw Error.unreadable("bad header")
        }
        guard !header.contains("'fortran_order': True") else { throw Error.unsupported("Fortran order") }
        let descr: String
        if header.contains("'<f4'") { descr = "f4" } else if header.contains("'<f8'") { descr = "f8" } else {
            throw Error.unsupported("dtype in \(header)")
        }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw Error.unreadable("no shape")
        }
        let shape = header[open.upperBound..<close].split(separator: ",").compactMap {
            Int($0.trimmingCharacters(in: .whitespaces))
        }
        let count = shape.reduce(1, *)
        let start = headerStart + headerLength
        let size = descr == "f4" ? 4 : 8
        guard bytes.count - start >= count * size else { throw Error.unreadable("data shorter than shape \(shape)") }
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                values[i] = descr == "f4"
                    ? Float(bitPattern: raw.loadUnaligned(fromByteOffset: start + i * 4, as: UInt32.self).littleEndian)
                    : Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: start + i * 8, as: UInt64.self).littleEndian))
            }
        }
        return Tensor(values, shape: shape)
    }

    public static func read(_ url: URL) throws -> Tensor {
        guard let data = try? Data(contentsOf: url) else { throw Error.unreadable("cannot open \(url.path)") }
        return try decode(data)
    }
}
