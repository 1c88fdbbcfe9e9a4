import FlamingoCore
import Foundation

/// Rewrites a model directory with its weights in another format (`flamingo quantize`): int8
/// blocks for the matrices its architecture marks int8-eligible, or every float tensor in
/// f32/f16/bf16. Streams one tensor at a time, so a checkpoint larger than memory converts.
public enum CheckpointConverter {
    public struct Summary: Sendable {
        public var tensorsIn = 0, tensorsOut = 0
        public var bytesIn = 0, bytesOut = 0
        public var quantizedMatrices = 0
    }

    public enum ConversionError: Error, LocalizedError {
        case alreadyQuantized(String)
        case destinationExists(String)
        case sameDirectory

        public var errorDescription: String? {
            switch self {
            case .alreadyQuantized(let dir): "\(dir) is already int8-quantized: convert from the original checkpoint"
            case .destinationExists(let dir): "\(dir) already exists and is not empty: choose a new output directory"
            case .sameDirectory: "the output directory must differ from the model directory"
            }
        }
    }

    public static func convert(from source: URL, to destination: URL, format: WeightFormat, maxShardBytes: Int = 2 << 30,
                               progress: (String) -> Void = { _ in }) throws -> Summary {
        let directory = try ModelDirectory(source)
        let config = directory.config
        if config.quantization != nil { throw ConversionError.alreadyQuantized(source.path) }
        guard source.standardizedFileURL.path != destination.standardizedFileURL.path else { throw ConversionError.sameDirectory }
        let fm = FileManager.default
        if fm.fileExists(atPath: destination.path), !((try? fm.contentsOfDirectory(atPath: destination.path)) ?? [""]).isEmpty {
            throw ConversionError.destinationExists(destination.path)
        }
        // Load (mapped) the whole model first: a missing, misshapen or stray tensor fails here, not in
        // the converted copy.
        let store = try WeightStore(directory: source)
        _ = try config.loadModel(weights: store, parts: .all(config))
        let eligible = store.int8EligibleNames

        var summary = Summary()
        var entries: [SafetensorsWriter.Entry] = []
        var sourceName: [String: String] = [:]
        for name in store.tensorNames {
            guard let e = store.entry(name) else { continue }
            summary.tensorsIn += 1
            summary.bytesIn += e.range.count
            if format == .int8 {
                if eligible.contains(name), e.shape.count == 2 {
                    let blocks = WeightMatrix.blockCount(e.shape[1])
                    entries.append(.init(name: name + WeightStore.int8ValuesSuffix, dtype: .i8, shape: e.shape))
                    entries.append(.init(name: name + WeightStore.int8ScalesSuffix, dtype: .f16, shape: [e.shape[0], blocks]))
                    sourceName[name + WeightStore.int8ValuesSuffix] = name
                    sourceName[name + WeightStore.int8ScalesSuffix] = name
                    summary.quantizedMatrices += 1
                } else {
                    entries.append(.init(name: name, dtype: e.dtype, shape: e.shape))
                }
            } else {
                entries.append(.init(name: name, dtype: dtype(of: format), shape: e.shape))
            }
            sourceName[entries[entries.count - 1].name] = sourceName[entries[entries.count - 1].name] ?? name
        }
        try fm.createDirectory(at: destination, withIntermediateDirectories: true)
        var pending: (name: String, matrix: WeightMatrix)?
        var done = 0
        try SafetensorsWriter.write(entries: entries, to: destination, maxShardBytes: maxShardBytes) { entry in
            let name = sourceName[entry.name]!
            let stored = store.entry(name)!
            done += 1
            if done % 16 == 0 { progress("\(done)/\(entries.count) tensors") }
            let tensor = try store.take(name, shape: stored.shape)
            if entry.name == name {
                return tensor.dtype == entry.dtype ? tensor : tensor.converted(to: entry.dtype)
            }
            if pending?.name != name {
                do {
                    pending = (name, try WeightMatrix.quantizedInt8(tensor))
                } catch {
                    throw ModelLoadError.quantization(name: name, reason: "\(error)")
                }
            }
            return entry.name.hasSuffix(WeightStore.int8ScalesSuffix) ? pending!.matrix.scales! : pending!.matrix.values
        }
        summary.tensorsOut = entries.count
        summary.bytesOut = entries.reduce(0) { $0 + $1.byteCount }

        // config.json as it was, plus the quantization entry (or the new torch_dtype).
        let configURL = source.appendingPathComponent("config.json")
        var json = try JSON.parse(Data(contentsOf: configURL))
        if format == .int8 {
            let q = Int8Quantization(modules: modules(of: eligible))
            json = json.setting("quantization_config", to: try JSON.parse(JSONEncoder().encode(q)))
        } else {
            let torchName = ["f32": "float32", "f16": "float16", "bf16": "bfloat16"][format.rawValue]!
            json = json.setting("torch_dtype", to: .string(torchName))
        }
        try json.serialized.write(to: destination.appendingPathComponent("config.json"))
        // Tokenizer, processor and generation settings travel unchanged.
        for file in try fm.contentsOfDirectory(atPath: source.path).sorted() {
            if file == "config.json" || file == WeightStore.indexFileName || file.hasSuffix(".safetensors") { continue }
            var isDirectory: ObjCBool = false
            let from = source.appendingPathComponent(file)
            guard fm.fileExists(atPath: from.path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            try fm.copyItem(at: from, to: destination.appendingPathComponent(file))
        }
        return summary
    }

    /// Name prefixes of the int8 matrices, up to their first index ("model.layers", "lm_head").
    static func modules(of names: Set<String>) -> [String] {
        Set(names.map { name -> String in
            let parts = name.split(separator: ".")
            let upTo = parts.firstIndex { Int($0) != nil } ?? parts.count - 1
            return parts[..<max(upTo, 1)].joined(separator: ".")
        }).sorted()
    }

    static func dtype(of format: WeightFormat) -> DType {
        switch format {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        case .int8: preconditionFailure("int8 is two tensors")
        }
    }
}

extension JSON {
    /// This object with `key` set to `value` (replaced in place if present, else appended).
    func setting(_ key: String, to value: JSON) -> JSON {
        guard case .object(var members) = self else { return self }
        if let i = members.firstIndex(where: { $0.key == key }) {
            members[i].value = value
        } else {
            members.append((key, value))
        }
        return .object(members)
    }
}
