import FlamingoCore
import Foundation

/// Writes tensors as safetensors: one file, or shards of at most `maxShardBytes` with a
/// `model.safetensors.index.json`, the way transformers' `save_pretrained` lays them out.
public enum SafetensorsWriter {
    /// What a tensor will be, before it is made (headers are written first).
    public struct Entry: Sendable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var byteCount: Int { shape.reduce(1, *) * dtype.size }

        public init(name: String, dtype: DType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
    }

    public static func write(_ tensors: [(name: String, tensor: Tensor)], to directory: URL, maxShardBytes: Int = 2 << 30) throws {
        let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.tensor) })
        try write(entries: tensors.map { Entry(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) },
                  to: directory, maxShardBytes: maxShardBytes) { byName[$0.name]! }
    }

    /// Streams tensors to disk one at a time: `make(entry)` is asked for each tensor in order, just
    /// before it is written, so memory holds one tensor, not the checkpoint (quantizing 160 GB).
    /// A nil tensor leaves a hole of its size (a sparse file: its bytes read as zeros, nothing
    /// written), for shape-only checkpoints in tests.
    public static func write(entries: [Entry], to directory: URL, maxShardBytes: Int = 2 << 30,
                             make: (Entry) throws -> Tensor?) throws {
        var shards: [[Entry]] = [[]]
        var size = 0
        for entry in entries {
            if size + entry.byteCount > maxShardBytes && !shards[shards.count - 1].isEmpty {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(entry)
            size += entry.byteCount
        }
        if shards.count == 1 {
            try writeFile(shards[0], to: directory.appendingPathComponent(WeightStore.singleFileName), make: make)
            return
        }
        var weightMap: [String: String] = [:]
        var total = 0
        for (i, shard) in shards.enumerated() {
            let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            try writeFile(shard, to: directory.appendingPathComponent(name), make: make)
            for entry in shard { weightMap[entry.name] = name; total += entry.byteCount }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(SafetensorsIndex(weightMap: weightMap, metadata: .init(totalSize: total)))
            .write(to: directory.appendingPathComponent(WeightStore.indexFileName))
    }

    /// The JSON header `writeFile` writes (`SafetensorsHeader` reads it).
    private struct Header: Encodable {
        struct Tensor: Encodable {
            let dtype: String
            let shape: [Int]
            let dataOffsets: [Int]

            enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
        }

        var tensors: [String: Tensor] = [:]

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: JSONKey.self)
            try c.encode(["format": "pt"], forKey: JSONKey(SafetensorsHeader.metadataKey))
            for (name, tensor) in tensors { try c.encode(tensor, forKey: JSONKey(name)) }
        }
    }

    /// One file: u64 header length, JSON header padded to 8 bytes, data.
    static func writeFile(_ entries: [Entry], to url: URL, make: (Entry) throws -> Tensor?) throws {
        var header = Header()
        var offset = 0
        for entry in entries {
            header.tensors[entry.name] = .init(dtype: entry.dtype.rawValue, shape: entry.shape,
                                               dataOffsets: [offset, offset + entry.byteCount])
            offset += entry.byteCount
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var json = try encoder.encode(header)
        while json.count % 8 != 0 { json.append(0x20) }
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: url.path])
        }
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var prefix = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        try handle.write(contentsOf: prefix)
        try handle.write(contentsOf: json)
        var end = UInt64(prefix.count + json.count)
        for entry in entries {
            end += UInt64(entry.byteCount)
            guard let tensor = try make(entry) else {
                try handle.seek(toOffset: end)
                continue
            }
            precondition(tensor.dtype == entry.dtype && tensor.shape == entry.shape,
                         "writer: \(entry.name) made as \(tensor.dtype) \(tensor.shape), announced \(entry.dtype) \(entry.shape)")
            try tensor.withUnsafeRawBytes { try handle.write(contentsOf: Data($0)) }
        }
        try handle.truncate(atOffset: end)
    }
}

/// `model.safetensors.index.json`: which shard holds each tensor, and the total size of the tensors.
struct SafetensorsIndex: Codable {
    struct Metadata: Codable {
        var totalSize: Int

        enum CodingKeys: String, CodingKey { case totalSize = "total_size" }
    }

    var weightMap: [String: String]
    var metadata: Metadata?

    enum CodingKeys: String, CodingKey { case weightMap = "weight_map", metadata }
}

extension SafetensorsIndex {
    /// Metadata is informational: a reader does not fail on metadata it cannot read.
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        weightMap = try c.decode([String: String].self, forKey: .weightMap)
        metadata = try? c.decodeIfPresent(Metadata.self, forKey: .metadata)
    }
}
