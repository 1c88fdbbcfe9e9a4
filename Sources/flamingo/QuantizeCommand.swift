import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct QuantizeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a copy of a model directory with int8 (or f32/f16/bf16) weights, loadable mapped by every command.",
        discussion: """
        int8: every weight matrix of the language model (decoder layers, gated cross-attention blocks, \
        the output head) becomes blocks of 32 int8 values with one f16 scale each, stored as \
        <name>.q8 (I8) and <name>.q8_scale (F16) and declared in config.json's quantization_config. \
        The vision encoder, resampler, embeddings and norms keep their stored dtype. \
        f32/f16/bf16: every float tensor in that dtype.
        """
    )

    @Option(help: "Model directory to convert.")
    var model: String

    @Option(help: "Output directory (created; must not exist or be empty).")
    var out: String

    @Option(help: "Weight format: int8, bf16, f16 or f32.")
    var dtype: String = "int8"

    @Option(name: .customLong("shard-size"), help: "Largest safetensors shard, e.g. 2GiB.")
    var shardSize: String = "2GiB"

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int?

    func run() async throws {
        try await failing {
            guard let format = WeightFormat(name: dtype) else { throw ValidationError("unknown --dtype '\(dtype)' (use int8, bf16, f16 or f32)") }
            guard let shard = parseByteSize(shardSize) else { throw ValidationError("--shard-size: cannot read '\(shardSize)'") }
            ComputeThreads.configure(threads ?? ProcessInfo.processInfo.activeProcessorCount)
            let progress = Progress(enabled: isatty(2) != 0)
            let started = Date()
            let s = try CheckpointConverter.convert(from: URL(fileURLWithPath: model), to: URL(fileURLWithPath: out),
                                                    format: format, maxShardBytes: shard) { progress.update("quantize: \($0)") }
            progress.finish()
            FileHandle.standardError.write(Data(String(
                format: "wrote %@ (%@): %d -> %d tensors, %.3f GB -> %.3f GB, %d weight matrices in int8, %.1f s\n",
                out, format.rawValue, s.tensorsIn, s.tensorsOut, Double(s.bytesIn) / 1e9, Double(s.bytesOut) / 1e9,
                s.quantizedMatrices, Date().timeIntervalSince(started)).utf8))
        }
    }
}
