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

    /// The printed result.
    struct Report: Encodable {
        let model: String
        let dtype: String
        let threads: Int
        let cpu: String
        let cpuFeatures: String
        /// Kernel family per weight dtype.
        let kernels: [String: String]
        let kernelLevel: String
        let parametersBillion: Double
        let weightBytes: Int
        let makeWeightsSeconds: Double
        let images: Int
        let visionSeconds: Double
        let promptTokens: Int
        let prefillSeconds: Double
        let prefillTokensPerSecond: Double
        let decodeTokens: Int
        let decodeTokensPerSecond: Double
        let decodeWeightBytesPerToken: Int
        let decodeWeightGBPerSecond: Double
        let machineMemoryReadGBPerSecond: Double
        let machineSGEMMGFLOPS: Double
        let memoryReadGBPerSecondBeforeDecode: Double
        let memoryReadGBPerSecondAfterDecode: Double
        let decodeFractionOfMemoryBandwidth: Double

        enum CodingKeys: String, CodingKey {
            case model, dtype, threads, cpu, cpuFeatures = "cpu_features", kernels, kernelLevel = "kernel_level",
                 parametersBillion = "parameters_billion", weightBytes = "weight_bytes", makeWeightsSeconds = "make_weights_seconds",
                 images, visionSeconds = "vision_seconds", promptTokens = "prompt_tokens", prefillSeconds = "prefill_seconds",
                 prefillTokensPerSecond = "prefill_tokens_per_second", decodeTokens = "decode_tokens",
                 decodeTokensPerSecond = "decode_tokens_per_second", decodeWeightBytesPerToken = "decode_weight_bytes_per_token",
                 decodeWeightGBPerSecond = "decode_weight_gb_per_second", machineMemoryReadGBPerSecond = "machine_memory_read_gb_per_second",
                 machineSGEMMGFLOPS = "machine_sgemm_gflops", memoryReadGBPerSecondBeforeDecode = "memory_read_gb_per_second_before_decode",
                 memoryReadGBPerSecondAfterDecode = "memory_read_gb_per_second_after_decode",
                 decodeFractionOfMemoryBandwidth = "decode_fraction_of_memory_bandwidth"
        }
    }

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
            let config: any ModelConfiguration = directory?.config ?? preset.config
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
            let model = try config.loadModel(weights: weights, parts: .all(config))
            let makeSeconds = Date().timeIntervalSince(made)

            let imageToken = directory?.imageTokenID ?? config.imageTokenID ?? config.language.vocabularySize - 1
            // Ordinary ids of the model's own vocabulary (ids 0-2 are specials, the image token and
            // any ids after it are not ordinary); the same ids for 32000-id vocabularies and small ones.
            let vocabulary = max(4, min(config.language.vocabularySize, imageToken) - 1)
            var prompt = [1] + (0..<(promptTokens - 1)).map { 3 + (97 + ($0 * 7919) % 30000) % (vocabulary - 3) }
            for i in 0..<images { prompt[1 + i * (promptTokens - 1) / max(images, 1)] = imageToken }
            let s = config.imageSize
            let pixels = (0..<images).map { i in Tensor((0..<(3 * s * s)).map { Float(($0 + i) % 255) / 255 - 0.5 }, shape: [3, s, s]) }
            let indices = config.imageIndices(tokens: prompt, imageTokenID: imageToken)

            log("vision...")
            var cache = model.makeCache()
            let t0 = Date()
            for p in pixels { model.attachImage(model.visualTokens(pixels: p), to: &cache) }
            let visionSeconds = Date().timeIntervalSince(t0)

            log("prefill \(promptTokens) tokens...")
            let t1 = Date()
            var h = model.embed(prompt)
            model.forward(&h, imageIndex: indices, cache: &cache)
            var logits = model.logits(h.rows((promptTokens - 1)..<promptTokens)).scalars
            let prefillSeconds = Date().timeIntervalSince(t1)

            let readBeforeDecode = readProbe.measure()
            log("decode \(decodeTokens) tokens...")
            let t2 = Date()
            for _ in 0..<decodeTokens {
                let token = Sampler.argmax(logits)
                var step = model.embed([token])
                model.forward(&step, imageIndex: [indices.last ?? nil], cache: &cache)
                logits = model.logits(step).scalars
            }
            let decodeSeconds = Date().timeIntervalSince(t2)
            let readAfterDecode = readProbe.measure()
            let readAroundDecode = (readBeforeDecode + readAfterDecode) / 2
            let bytesPerToken = model.decodeTraffic.bytes
            let decodeTokensPerSecond = Double(decodeTokens) / decodeSeconds
            let streamed = Double(bytesPerToken) * decodeTokensPerSecond / 1e9

            let result = Report(
                model: directory?.url.path ?? preset.rawValue, dtype: model.matrixFormat == .int8 ? "int8" : DType(name: model.matrixFormat.rawValue)!.rawValue,
                threads: ComputeThreads.count, cpu: CPUFeatures.current.modelName, cpuFeatures: CPUFeatures.current.description,
                kernels: KernelTable.active.variants, kernelLevel: KernelTable.active.level.rawValue,
                parametersBillion: Double(model.weights.takenParameterCount) / 1e9,
                weightBytes: model.weightBytes, makeWeightsSeconds: makeSeconds,
                images: images, visionSeconds: visionSeconds,
                promptTokens: promptTokens, prefillSeconds: prefillSeconds,
                prefillTokensPerSecond: Double(promptTokens) / prefillSeconds,
                decodeTokens: decodeTokens, decodeTokensPerSecond: decodeTokensPerSecond,
                decodeWeightBytesPerToken: bytesPerToken,
                decodeWeightGBPerSecond: streamed,
                machineMemoryReadGBPerSecond: limits.memoryReadGBps,
                machineSGEMMGFLOPS: limits.sgemmGFLOPS,
                memoryReadGBPerSecondBeforeDecode: readBeforeDecode,
                memoryReadGBPerSecondAfterDecode: readAfterDecode,
                decodeFractionOfMemoryBandwidth: streamed / readAroundDecode)
            print(String(decoding: try jsonData(result, pretty: true), as: UTF8.self))
        }
    }
}
