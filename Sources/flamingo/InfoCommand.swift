import ArgumentParser
import FlamingoCore
import FlamingoModel
import Foundation

struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Describe a model directory (shapes, weights, tokenizer) and this machine's CPU."
    )

    @OptionGroup var modelOptions: ModelOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await failing {
            let directory = try ModelDirectory(modelOptions.modelURL)
            let model = try directory.loadModel()
            let c = directory.config
            var dtypes: [String: Int] = [:]
            for name in model.weights.tensorNames {
                if let e = model.weights.entry(name) { dtypes[e.dtype.rawValue, default: 0] += e.range.count }
            }
            let info: [String: Any] = [
                "model": directory.url.path,
                "model_type": c.modelType,
                "lm": ["layers": c.text.layerCount, "hidden_size": c.text.hiddenSize, "heads": c.text.headCount,
                       "intermediate_size": c.text.intermediateSize, "vocab_size": c.text.vocabSize,
                       "additional_vocab_size": c.text.additionalVocabSize, "activation": c.text.activation.rawValue],
                "cross_attention": ["every": c.crossLayerInterval, "blocks": c.crossAttentionBlockCount, "qk_layer_norms": c.qkLayerNorms],
                "vision": ["image_size": c.vision.imageSize, "patch_size": c.vision.patchSize, "hidden_size": c.vision.hiddenSize,
                           "layers": c.vision.layerCount, "tokens_per_image": c.vision.tokensPerImage],
                "resampler": c.useResampler
                    ? ["latents": c.resampler.latentCount, "depth": c.resampler.depth, "heads": c.resampler.headCount,
                       "head_dim": c.resampler.headDim, "qk_layer_norms": c.resampler.qkLayerNorms] as [String: Any]
                    : NSNull(),
                "visual_tokens_per_image": c.visualTokensPerImage,
                "tensors": model.weights.tensorNames.count,
                "weight_bytes_by_dtype": dtypes,
                "image_token_id": directory.imageTokenID ?? NSNull(),
                "tokenizer": directory.tokenizer.map { ["vocabulary_size": $0.vocabularySize] as [String: Any] } ?? NSNull(),
                "cpu": CPUFeatures.current.modelName,
                "cpu_features": CPUFeatures.current.description,
                "kernels": KernelTable.active.variants,
                "kernel_level": KernelTable.active.level.rawValue,
            ]
            if json {
                let data = try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            let total = dtypes.values.reduce(0, +)
            print("model        \(directory.url.path) (\(c.modelType))")
            print("language     \(c.text.layerCount) layers, width \(c.text.hiddenSize), \(c.text.headCount) heads, FFN \(c.text.intermediateSize) \(c.text.activation.rawValue), vocab \(c.text.vocabSize)+\(c.text.additionalVocabSize)")
            print("cross-attn   \(c.crossAttentionBlockCount) gated blocks, one before every \(c.crossLayerInterval) layer(s), qk norms \(c.qkLayerNorms ? "on" : "off")")
            print("vision       CLIP ViT \(c.vision.layerCount) layers, width \(c.vision.hiddenSize), \(c.vision.imageSize)px / \(c.vision.patchSize)px patches = \(c.vision.tokensPerImage) tokens")
            if c.useResampler {
                print("resampler    \(c.resampler.depth) blocks, \(c.resampler.latentCount) latents, \(c.resampler.headCount)x\(c.resampler.headDim) heads, qk norms \(c.resampler.qkLayerNorms ? "on" : "off")")
            } else {
                print("resampler    none (the LM reads all \(c.vision.tokensPerImage) vision tokens per image)")
            }
            print("weights      \(model.weights.tensorNames.count) tensors, \(String(format: "%.1f", Double(total) / 1e6)) MB (" + dtypes.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1f", Double($0.value) / 1e6)) MB" }.joined(separator: ", ") + ")")
            print("image token  \(directory.imageTokenID.map(String.init) ?? "none")")
            print("tokenizer    \(directory.tokenizer.map { "\($0.vocabularySize) ids" } ?? "none (use --input-ids)")")
            print("cpu          \(CPUFeatures.current.modelName): \(CPUFeatures.current.description)")
            print("kernels      \(KernelTable.active.summary) (level \(KernelTable.active.level.rawValue); FLAMINGO_KERNELS=portable|avx2|avx512|best)")
        }
    }
}
