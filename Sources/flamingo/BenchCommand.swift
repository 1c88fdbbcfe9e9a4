import ArgumentParser
import FlamingoCore
import FlamingoModel
import Foundation

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure prefill and decode speed on synthetic weights of a preset shape (JSON results)."
    )

    @Option(help: "Model shape: \(Preset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: String = Preset.bench1b.rawValue

    @Option(help: "Weight format of synthetic weights: f32, f16, bf16 or int8 (int8: the language model's matrices).")
    var dtype: String = "bf16"

    @Option(help: "With --model: quantize the language model's weight matrices at load (int8).")
    var quantize: String?

    @Option(help: "Benchmark this checkpoint instead of synthetic weights (e.g. one written by `flamingo synth`).")
    var model: String?

    @Option(name: .customLong("prompt-tokens"), help: "Prompt length (tokens) for prefill.")
    var promptTokens: Int = 128

    @Option(name: .customLong("decode-tokens"), help: "Tokens to decode.")
    var decodeTokens: Int = 32

    @Option(help: "Images in the prompt.")
    var images: Int = 1

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int?

    func run() async throws {
        try await failing {
            guard let preset = Preset(rawValue: preset) else { throw ValidationError("unknown preset '\(preset)'") }
            guard let format = WeightFormat(name: dtype) else { throw ValidationError("unknown dtype '\(dtype)'") }
            if let quantize, WeightFormat(name: quantize) != .int8 { throw ValidationError("--quantize: only int8 is supported") }
            let quantizeMatrices = format == .int8 || quantize != nil
            let dtype: DType = format == .int8 ? .bf16 : DType(name: self.dtype)!
            guard promptTokens > images, decodeTokens >= 1 else { throw ValidationError("need prompt-tokens > images and decode-tokens >= 1") }
            ComputeThreads.configure(threads ?? ProcessInfo.processInfo.activeProcessorCount)
            let directory = try model.map { try ModelDirectory(URL(fileURLWithPath: $0)) }
            let config = directory?.config ?? preset.config
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }

            log("measuring machine limits...")
            let limits = MachineLimits.measure()
            // Read bandwidth moves between runs on shared machines: measured again right before and
            // right after decode, and decode's fraction taken against their mean.
            let readProbe = ReadProbe()
            log(directory.map { "loading \($0.url.path)..." } ?? "making \(preset.rawValue) with synthetic \(dtype.rawValue) weights...")
            let made = Date()
            let weights = try directory.map { try WeightStore(directory: $0.url, quantizeMatrices: quantizeMatrices) }
                ?? WeightStore(syntheticSeed: 42, dtype: dtype, quantizeMatrices: quantizeMatrices)
            let model = try Flamingo(config: config, weights: weights, parts: .all(config))
            let makeSeconds = Date().timeIntervalSince(made)

            let imageToken = directory?.imageTokenID ?? config.imageTokenID ?? config.text.vocabSize + 1
            // Ordinary ids of the model's own vocabulary (ids 0-2 are specials); the same ids as
            // before for 32000-id vocabularies, and in range for small ones (models/demo).
            let vocabulary = max(4, config.text.vocabSize)
            var prompt = [1] + (0..<(promptTokens - 1)).map { 3 + (97 + ($0 * 7919) % 30000) % (vocabulary - 3) }
            for i in 0..<images { prompt[1 + i * (promptTokens - 1) / max(images, 1)] = imageToken }
            let s = config.vision.imageSize
            let pixels = (0..<images).map { i in Tensor((0..<(3 * s * s)).map { Float(($0 + i) % 255) / 255 - 0.5 }, shape: [3, s, s]) }
            let indices = ImageAttention.imageIndices(tokens: prompt, imageTokenID: imageToken, endOfSequenceTokenID: nil)

            log("vision...")
            var cache = model.language.makeCache()
            let t0 = Date()
            for p in pixels { model.language.attachImage(model.visualTokens(pixels: p), to: &cache) }
            let visionSeconds = Date().timeIntervalSince(t0)

            log("prefill \(promptTokens) tokens...")
            let t1 = Date()
            var h = model.embedding!(prompt)
            model.language.forward(&h, imageIndex: indices, cache: &cache)
            var logits = model.head!(h.rows((promptTokens - 1)..<promptTokens)).scalars
            let prefillSeconds = Date().timeIntervalSince(t1)

            let readBeforeDecode = readProbe.measure()
            log("decode \(decodeTokens) tokens...")
            let t2 = Date()
            for _ in 0..<decodeTokens {
                let token = Sampler.argmax(logits)
                var step = model.embedding!([token])
                model.language.forward(&step, imageIndex: [indices.last ?? nil], cache: &cache)
                logits = model.head!(step).scalars
            }
            let decodeSeconds = Date().timeIntervalSince(t2)
            let readAfterDecode = readProbe.measure()
            let readAroundDecode = (readBeforeDecode + readAfterDecode) / 2
            let bytesPerToken = model.language.weightBytesPerToken + model.head!.weightBytes
            let decodeTokensPerSecond = Double(decodeTokens) / decodeSeconds
            let streamed = Double(bytesPerToken) * decodeTokensPerSecond / 1e9

            let result: [String: Any] = [
                "model": directory?.url.path ?? preset.rawValue, "dtype": model.language.matrixFormat == .int8 ? "int8" : model.language.matrixDType.rawValue, "threads": ComputeThreads.count,
                "cpu": CPUFeatures.current.modelName, "cpu_features": CPUFeatures.current.description,
                "kernels": KernelTable.active.variants, "kernel_level": KernelTable.active.level.rawValue,
                "parameters_billion": Double(model.weights.takenParameterCount) / 1e9,
                "weight_bytes": model.weightBytes, "make_weights_seconds": makeSeconds,
                "images": images, "vision_seconds": visionSeconds,
                "prompt_tokens": promptTokens, "prefill_seconds": prefillSeconds,
                "prefill_tokens_per_second": Double(promptTokens) / prefillSeconds,
                "decode_tokens": decodeTokens, "decode_tokens_per_second": decodeTokensPerSecond,
                "decode_weight_bytes_per_token": bytesPerToken,
                "decode_weight_gb_per_second": streamed,
                "machine_memory_read_gb_per_second": limits.memoryReadGBps,
                "machine_sgemm_gflops": limits.sgemmGFLOPS,
                "memory_read_gb_per_second_before_decode": readBeforeDecode,
                "memory_read_gb_per_second_after_decode": readAfterDecode,
                "decode_fraction_of_memory_bandwidth": streamed / readAroundDecode,
            ]
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
        }
    }
}
