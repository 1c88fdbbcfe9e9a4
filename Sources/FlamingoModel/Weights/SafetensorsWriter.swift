import FlamingoCore
import Foundation

/// Writes tensors as safetensors: one file, or shards of at most `maxShardBytes` with a
/// `model.safetensors.index.json`, the way transformers' `save_pretrained` lays them out.
public enum SafetensorsWriter {
    public static func write(_ tensors: [(name: String, tensor: Tensor)], to directory: URL, maxShardBytes: Int = 2 << 30) throws {
        var shards: [[(name: String, tensor: Tensor)]] = [[]]
        var size = 0
        for item in tensors {
            if size + item.tensor.byteCount > maxShardBytes && !shards[shards.count - 1].isEmpty {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(item)
            size += item.tensor.byteCount
        }
        if shards.count == 1 {
            try writeFile(shards[0], to: directory.appendingPathComponent(WeightStore.singleFileName))
            return
        }
        var weightMap: [String: String] = [:]
        var total = 0
        for (i, shard) in shards.enumerated() {
            let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            try writeFile(shard, to: directory.appendingPathComponent(name))
            for item in shard { weightMap[item.name] = name; total += item.tensor.byteCount }
        }
        let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
        try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
            .write(to: directory.appendingPathComponent(WeightStore.indexFileName))
    }

    /// One file: u64 header length, JSON header padded to 8 bytes, data.
    public static func writeFile(_ tensors: [(name: String, tensor: Tensor)], to url: URL) throws {
        var header: [String: Any] = ["__metadata__": ["format": "pt"]]
        var offset = 0
        for item in tensors {
            header[item.name] = ["dtype": item.tensor.dtype.rawValue, "shape": item.tensor.shape,
                                 "data_offsets": [offset, offset + item.tensor.byteCount]]
            offset += item.tensor.byteCount
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
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
        for item in tensors {
            try item.tensor.withUnsafeRawBytes { try handle.write(contentsOf: Data($0)) }
        }
    }
}
