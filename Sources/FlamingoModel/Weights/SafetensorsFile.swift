import FlamingoCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Errors loading a checkpoint. Every case names the file and, where there is one, the tensor.
public enum ModelLoadError: Error, LocalizedError, Equatable {
    case missingDirectory(String)
    case missingFile(String)
    case badHeader(file: String, reason: String)
    case truncated(file: String, tensor: String, needed: Int, available: Int)
    case unknownDType(file: String, tensor: String, dtype: String)
    case missingTensor(name: String, searched: String)
    case shapeMismatch(name: String, expected: [Int], got: [Int])
    case unexpectedTensors(names: [String])
    case badIndex(file: String, reason: String)
    case wrongDType(name: String, expected: String, got: DType)
    case quantization(name: String, reason: String)
    case tensorParallel(name: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .missingDirectory(let dir): "model directory \(dir) does not exist"
        case .missingFile(let file): "missing \(file)"
        case .badHeader(let file, let reason): "\(file): bad safetensors header: \(reason)"
        case .truncated(let file, let tensor, let needed, let available):
            "\(file): truncated: tensor '\(tensor)' needs bytes up to \(needed) but the data section has \(available)"
        case .unknownDType(let file, let tensor, let dtype):
            "\(file): tensor '\(tensor)' has unsupported dtype '\(dtype)' (supported: F32, F16, BF16, I8)"
        case .missingTensor(let name, let searched): "missing tensor '\(name)' (searched \(searched))"
        case .shapeMismatch(let name, let expected, let got):
            "tensor '\(name)' has wrong shape: expected \(expected), got \(got)"
        case .unexpectedTensors(let names):
            "checkpoint has \(names.count) tensor(s) the model does not use: \(names.prefix(5).joined(separator: ", "))\(names.count > 5 ? ", ..." : "")"
        case .badIndex(let file, let reason): "\(file): \(reason)"
        case .wrongDType(let name, let expected, let got): "tensor '\(name)' has dtype \(got.rawValue), expected \(expected)"
        case .quantization(let name, let reason): "cannot quantize '\(name)': \(reason)"
        case .tensorParallel(let name, let reason): "cannot split '\(name)' for tensor parallelism: \(reason)"
        }
    }
}

/// A safetensors JSON header: an entry per tensor name, and `__metadata__` (string to string;
/// anything else there is ignored). Decoding keeps what `SafetensorsFile` needs to name a fault: an
/// entry that is not an object with a string "dtype" and arrays "shape" and "data_offsets" is nil,
/// and so is an array element that is not an integer.
struct SafetensorsHeader: Decodable {
    struct Entry: Decodable {
        let dtype: String
        let shape: [Element]
        let dataOffsets: [Element]

        enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
    }

    /// An array element: an integer, or nil for any other JSON value.
    struct Element: Decodable {
        let value: Int?

        init(from decoder: Decoder) throws { value = try? decoder.singleValueContainer().decode(Int.self) }
    }

    static let metadataKey = "__metadata__"

    var entries: [String: Entry?] = [:]
    var metadata: [String: String] = [:]

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: JSONKey.self)
        for key in c.allKeys {
            if key.stringValue == Self.metadataKey {
                metadata = (try? c.decode([String: String].self, forKey: key)) ?? [:]
            } else {
                entries[key.stringValue] = .some(try? c.decode(Entry.self, forKey: key))
            }
        }
    }
}

/// A JSON object member named at run time (tensor names).
struct JSONKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }

    init(_ name: String) { stringValue = name }
    init(stringValue: String) { self.init(stringValue) }
    init?(intValue: Int) { nil }
}

/// A whole file's bytes, read-only, alive as long as this object.
protocol FileBytes: AnyObject, Sendable {
    var base: UnsafeRawPointer { get }
    var size: Int { get }
}

/// A read-only memory mapping of a whole file, unmapped when the last reference goes.
final class MappedFile: FileBytes, @unchecked Sendable {
    let path: String
    let base: UnsafeRawPointer
    let size: Int

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ModelLoadError.missingFile(path) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ModelLoadError.missingFile(path) }
        size = Int(st.st_size)
        guard size > 0 else {
            throw ModelLoadError.badHeader(file: path, reason: "file is empty")
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw ModelLoadError.badHeader(file: path, reason: "cannot mmap: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
        adviseHugePages(base, byteCount: size)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }
}

/// A copy of a file's bytes on the heap, exactly as long as the data and 64-byte aligned (as
/// tensors in a mapping are): the backing of a `SafetensorsFile` read from memory.
final class HeapBytes: FileBytes, @unchecked Sendable {
    let base: UnsafeRawPointer
    let size: Int

    init(_ data: Data) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(data.count, 1), alignment: 64)
        data.copyBytes(to: p.assumingMemoryBound(to: UInt8.self), count: data.count)
        base = UnsafeRawPointer(p)
        size = data.count
    }

    deinit { UnsafeMutableRawPointer(mutating: base).deallocate() }
}

/// One `.safetensors` file: `u64 header length | JSON header | data`, memory-mapped (or copied
/// from memory, `init(bytes:name:)`). The header is
/// validated in full on open (dtypes, shapes, offsets inside the data, sizes consistent), so a
/// tensor handed out is always backed by real bytes.
public struct SafetensorsFile: Sendable {
    public struct Entry: Sendable, Equatable {
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data section.
        public let range: Range<Int>
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    /// The file's bytes: a mapping, or a heap copy.
    private let file: any FileBytes
    private let dataOffset: Int

    /// Largest header accepted (the format's own limit is 100 MB).
    static let maxHeaderBytes = 100_000_000

    /// Maps the file at `path` and checks its header.
    public init(path: String) throws {
        try self.init(file: MappedFile(path: path), path: path)
    }

    /// The file's bytes given in memory (copied), checked exactly as a file on disk is;
    /// `name` stands for the path in errors. For callers that hold the bytes already (and the fuzzer).
    public init(bytes: Data, name: String) throws {
        guard !bytes.isEmpty else { throw ModelLoadError.badHeader(file: name, reason: "file is empty") }
        try self.init(file: HeapBytes(bytes), path: name)
    }

    private init(file: any FileBytes, path: String) throws {
        self.file = file
        self.path = path
        let base = file.base, size = file.size
        guard size >= 8 else {
            throw ModelLoadError.badHeader(file: path, reason: "file is \(size) bytes, shorter than the 8-byte length prefix")
        }
        let headerLength = Int(clamping: UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)))
        guard headerLength >= 2, headerLength <= Self.maxHeaderBytes else {
            throw ModelLoadError.badHeader(file: path, reason: "header length \(headerLength) is out of range")
        }
        guard 8 + headerLength <= size else {
            throw ModelLoadError.badHeader(file: path, reason: "header length \(headerLength) runs past the end of the \(size)-byte file")
        }
        let headerData = Data(bytes: base + 8, count: headerLength)
        guard let header = try? JSONDecoder().decode(SafetensorsHeader.self, from: headerData) else {
            throw ModelLoadError.badHeader(file: path, reason: "header is not a JSON object")
        }
        dataOffset = 8 + headerLength
        let dataSize = size - dataOffset
        var entries: [String: Entry] = [:]
        for (name, entry) in header.entries {
            guard let entry, entry.dataOffsets.count == 2 else {
                throw ModelLoadError.badHeader(file: path, reason: "entry '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let dtype = DType(rawValue: entry.dtype) else {
                throw ModelLoadError.unknownDType(file: path, tensor: name, dtype: entry.dtype)
            }
            let shape = entry.shape.compactMap(\.value)
            let offsets = entry.dataOffsets.compactMap(\.value)
            guard shape.count == entry.shape.count, offsets.count == 2, shape.allSatisfy({ $0 >= 0 }),
                  offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw ModelLoadError.badHeader(file: path, reason: "entry '\(name)' has an invalid shape or offsets")
            }
            var elements = 1
            for d in shape {
                let (p, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow, p <= Int(Int32.max) * 64 else {
                    throw ModelLoadError.badHeader(file: path, reason: "entry '\(name)' shape \(shape) is too large")
                }
                elements = p
            }
            guard offsets[1] - offsets[0] == elements * dtype.size else {
                throw ModelLoadError.badHeader(
                    file: path,
                    reason: "entry '\(name)': \(offsets[1] - offsets[0]) bytes for shape \(shape) of \(entry.dtype) (needs \(elements * dtype.size))")
            }
            guard offsets[1] <= dataSize else {
                throw ModelLoadError.truncated(file: path, tensor: name, needed: offsets[1], available: dataSize)
            }
            entries[name] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
        }
        // Tensors may not overlap: a crafted header must not alias one tensor's bytes as another's.
        let sorted = entries.sorted { $0.value.range.lowerBound < $1.value.range.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.value.range.upperBound > b.value.range.lowerBound {
            throw ModelLoadError.badHeader(file: path, reason: "tensors '\(a.key)' and '\(b.key)' overlap")
        }
        self.entries = entries
        self.metadata = header.metadata
    }

    /// The tensor `name`, viewing the mapped bytes (no copy).
    public func tensor(_ name: String) -> Tensor? {
        guard let e = entries[name] else { return nil }
        let address = file.base + dataOffset + e.range.lowerBound
        if Int(bitPattern: address) % e.dtype.size != 0 {
            // Old writers did not pad the header; copy rather than read misaligned elements.
            let owned = TensorStorage(byteCount: e.range.count)
            owned.base.copyMemory(from: address, byteCount: e.range.count)
            return Tensor(dtype: e.dtype, shape: e.shape, storage: owned)
        }
        let storage = TensorStorage(borrowing: address, byteCount: e.range.count, owner: file)
        return Tensor(dtype: e.dtype, shape: e.shape, storage: storage)
    }
}
