/// Model shapes without weights, for planning and synthetic-weight benchmarks (DESIGN.md §2).
/// Values follow the published IDEFICS configs (HuggingFaceM4/idefics-9b, idefics-80b).
public enum Preset: String, CaseIterable, Sendable {
    case idefics9b = "idefics-9b"
    case idefics80b = "idefics-80b"
    /// ~1.2B parameters of IDEFICS shape: small enough for one 2-core machine, large enough that
    /// decode is bound by weight streaming.
    case bench1b = "bench-1b"

    public var config: IdeficsConfig {
        let clipH = VisionTransformerConfig(hiddenSize: 1280, imageSize: 224, patchSize: 14, intermediateSize: 5120,
                                          layerCount: 32, headCount: 16, channelCount: 3, activation: .gelu, layerNormEps: 1e-5)
        let resampler = PerceiverResamplerConfig(latentCount: 64, depth: 6, headCount: 16, headDim: 96, qkLayerNorms: false)
        func text(_ hidden: Int, _ inter: Int, _ layers: Int, _ heads: Int) -> IdeficsConfig.Text {
            IdeficsConfig.Text(vocabSize: 32000, additionalVocabSize: 2, hiddenSize: hidden, intermediateSize: inter,
                                layerCount: layers, headCount: heads, activation: .silu, rmsNormEps: 1e-6, ropeTheta: 10000,
                                maxPositionEmbeddings: 2048, tieWordEmbeddings: false, bosTokenID: 1, eosTokenIDs: [2], padTokenID: 0)
        }
        switch self {
        case .idefics9b:
            return IdeficsConfig(modelType: "idefics", text: text(4096, 11008, 32, 32), vision: clipH, resampler: resampler,
                                  crossLayerInterval: 4, qkLayerNorms: false, useResampler: true, imageTokenID: 32001)
        case .idefics80b:
            return IdeficsConfig(modelType: "idefics", text: text(8192, 22016, 80, 64), vision: clipH, resampler: resampler,
                                  crossLayerInterval: 4, qkLayerNorms: true, useResampler: true, imageTokenID: 32001)
        case .bench1b:
            let vision = VisionTransformerConfig(hiddenSize: 768, imageSize: 224, patchSize: 16, intermediateSize: 3072,
                                               layerCount: 12, headCount: 12, channelCount: 3, activation: .gelu, layerNormEps: 1e-5)
            let small = PerceiverResamplerConfig(latentCount: 64, depth: 2, headCount: 12, headDim: 64, qkLayerNorms: false)
            return IdeficsConfig(modelType: "idefics", text: text(2048, 5632, 16, 16), vision: vision, resampler: small,
                                  crossLayerInterval: 4, qkLayerNorms: false, useResampler: true, imageTokenID: 32001)
        }
    }
}
