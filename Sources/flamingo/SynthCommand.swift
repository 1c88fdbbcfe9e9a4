import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct SynthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a checkpoint of a preset's shape with deterministic random weights (for benchmarks and memory tests)."
    )

    @Option(help: "Model shape: \(Preset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: String = Preset.bench1b.rawValue

    @Option(help: "Override the number of LM layers (a multiple of the cross-attention interval).")
    var layers: Int?

    @Option(help: "Weight dtype: f32, f16 or bf16.")
    var dtype: String = "bf16"

    @Option(help: "Random seed.")
    var seed: UInt64 = 42

    @Option(name: .customLong("shard-size"), help: "Largest safetensors shard, e.g. 512MiB.")
    var shardSize: String = "2GiB"

    @Option(help: "Output directory (created).")
    var out: String

    func run() async throws {
        try await failing {
            guard let preset = Preset(rawValue: preset) else { throw ValidationError("unknown preset '\(preset)'") }
            guard let dtype = DType(name: dtype) else { throw ValidationError("unknown dtype '\(dtype)'") }
            guard let shard = parseByteSize(shardSize) else { throw ValidationError("--shard-size: cannot read '\(shardSize)'") }
            var config: any ModelConfiguration = preset.config
            if let layers {
                guard layers > 0 else { throw ValidationError("--layers must be positive") }
                do { config = try config.withLayerCount(layers) } catch { throw ValidationError("--layers \(layers): \(error.localizedDescription)") }
            }
            let store = WeightStore(syntheticSeed: seed, dtype: dtype, keep: true)
            _ = try config.loadModel(weights: store, parts: .all(config))
            let dir = URL(fileURLWithPath: out)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(config).write(to: dir.appendingPathComponent("config.json"))
            let tensors = store.syntheticTensors
            try SafetensorsWriter.write(tensors, to: dir, maxShardBytes: shard)
            let bytes = tensors.reduce(0) { $0 + $1.tensor.byteCount }
            FileHandle.standardError.write(Data(String(format: "wrote %@: %d tensors, %.2f GB of %@ weights\n",
                                                      dir.path, tensors.count, Double(bytes) / 1e9, dtype.rawValue).utf8))
        }
    }
}
