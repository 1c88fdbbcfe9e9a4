import FlamingoCore
import Foundation

/// An IDEFICS model's shape, read from a Hugging Face IDEFICS `config.json`
/// (transformers' `IdeficsConfig`, with nested `vision_config` and `perceiver_config`).
/// Defaults are transformers' defaults; invariants are checked when decoding.
public struct IdeficsConfig: ModelConfiguration, Codable, Equatable {
    public static let modelType = "idefics"
    public var modelType: String
    public var text: Text
    public var vision: VisionTransformerConfig
    public var resampler: PerceiverResamplerConfig
    /// A gated cross-attention block runs before LM layer i when i % interval == 0.
    public var crossLayerInterval: Int
    /// RMSNorm over head_dim on the cross-attention's q and k.
    public var qkLayerNorms: Bool
    public var useResampler: Bool
    /// `image_token_id` when config.json states it; else the tokenizer's `<image>`.
    public var imageTokenID: Int?
    /// `quantization_config` of a directory written by `flamingo quantize --dtype int8`.
    public var quantization: Int8Quantization?

    /// The language model (LLaMA in IDEFICS).
    public struct Text: Codable, Sendable, Equatable {
        public var vocabSize: Int
        /// Extra ids (`<image>`, `<fake_token_around_image>`) with their own embedding and head rows.
        public var additionalVocabSize: Int
        public var hiddenSize: Int
        public var intermediateSize: Int
        public var layerCount: Int
        public var headCount: Int
        public var activation: Activation
        public var rmsNormEps: Float
        public var ropeTheta: Float
        public var maxPositionEmbeddings: Int
        public var tieWordEmbeddings: Bool
        public var bosTokenID: Int?
        public var eosTokenIDs: [Int]
        public var padTokenID: Int?

        public var headDim: Int { hiddenSize / headCount }
        /// Ids the model accepts and produces: base plus additional vocabulary.
        public var totalVocabSize: Int { vocabSize + additionalVocabSize }
    }

    /// Visual tokens each image contributes to cross-attention.
    public var visualTokensPerImage: Int { useResampler ? resampler.latentCount : vision.tokensPerImage }
    /// Width of the visual tokens the LM's cross-attention reads (the vision width, also after resampling).
    public var visualTokenWidth: Int { vision.hiddenSize }
    public var placement: CrossAttentionPlacement { .everyNthLayer(crossLayerInterval) }
    /// Number of gated cross-attention blocks.
    public var crossAttentionBlockCount: Int { placement.blockCount(layerCount: text.layerCount) }

    /// The gated cross-attention block that runs before `layer`, if any.
    public func crossAttentionBlock(beforeLayer layer: Int) -> Int? {
        placement.block(beforeLayer: layer, layerCount: text.layerCount)
    }

    /// The LM's decoder layers (LLaMA: no grouped-query attention, plain RoPE).
    var decoder: DecoderLayerConfig {
        DecoderLayerConfig(hiddenSize: text.hiddenSize, intermediateSize: text.intermediateSize, headCount: text.headCount,
                           keyValueHeadCount: text.headCount, headDim: text.headDim, activation: text.activation,
                           rmsNormEps: text.rmsNormEps, ropeTheta: text.ropeTheta)
    }

    /// The gated blocks: the LM's width, heads and MLP, keys and values from the visual tokens.
    var crossAttention: GatedCrossAttentionConfig {
        GatedCrossAttentionConfig(hiddenSize: text.hiddenSize, visualTokenWidth: visualTokenWidth, headCount: text.headCount,
                                  intermediateSize: text.intermediateSize, activation: text.activation,
                                  rmsNormEps: text.rmsNormEps, qkLayerNorms: qkLayerNorms)
    }

    // MARK: ModelConfiguration

    public var language: LanguageShape {
        LanguageShape(vocabularySize: text.totalVocabSize, hiddenSize: text.hiddenSize, layerCount: text.layerCount,
                      maxPositions: text.maxPositionEmbeddings, bosTokenID: text.bosTokenID, eosTokenIDs: text.eosTokenIDs)
    }
    public var imageSize: Int { vision.imageSize }
    public func crossAttends(layer: Int) -> Bool { crossAttentionBlock(beforeLayer: layer) != nil }

    public func imageIndices(tokens: [Int], imageTokenID: Int) -> [Int?] {
        IdeficsImageAttention.imageIndices(tokens: tokens, imageTokenID: imageTokenID, endOfSequenceTokenID: text.eosTokenIDs.first)
    }

    public func loadModel(weights: WeightStore, parts: ModelParts, progress: (String) -> Void) throws -> any VisionLanguageModel {
        try Idefics(config: self, weights: weights, parts: parts, progress: progress)
    }

    public func withLayerCount(_ layerCount: Int) throws -> any ModelConfiguration {
        var config = self
        config.text.layerCount = layerCount
        try config.validate()
        return config
    }

    public var summary: [(label: String, text: String)] {
        var lines = [
            ("language", "\(text.layerCount) layers, width \(text.hiddenSize), \(text.headCount) heads, FFN \(text.intermediateSize) \(text.activation.rawValue), vocab \(text.vocabSize)+\(text.additionalVocabSize)"),
            ("cross-attn", "\(crossAttentionBlockCount) gated blocks, one before every \(crossLayerInterval) layer(s), qk norms \(qkLayerNorms ? "on" : "off")"),
            ("vision", "CLIP ViT \(vision.layerCount) layers, width \(vision.hiddenSize), \(vision.imageSize)px / \(vision.patchSize)px patches = \(vision.tokensPerImage) tokens"),
        ]
        let r = resampler
        lines.append(("resampler", useResampler
            ? "\(r.depth) blocks, \(r.latentCount) latents, \(r.headCount)x\(r.headDim) heads, qk norms \(r.qkLayerNorms ? "on" : "off")"
            : "none (the LM reads all \(vision.tokensPerImage) vision tokens per image)"))
        return lines
    }
}

extension IdeficsConfig {
    private enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case vocabSize = "vocab_size", additionalVocabSize = "additional_vocab_size"
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case layerCount = "num_hidden_layers", headCount = "num_attention_heads"
        case keyValueHeadCount = "num_key_value_heads"
        case hiddenAct = "hidden_act", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case bosTokenID = "bos_token_id", eosTokenID = "eos_token_id", padTokenID = "pad_token_id"
        case crossLayerInterval = "cross_layer_interval", qkLayerNorms = "qk_layer_norms"
        case useResampler = "use_resampler", imageTokenID = "image_token_id"
        case alphaType = "alpha_type"
        case visionConfig = "vision_config", perceiverConfig = "perceiver_config"
        case quantization = "quantization_config"
    }

    private enum VisionKeys: String, CodingKey {
        case embedDim = "embed_dim", hiddenSize = "hidden_size", imageSize = "image_size", patchSize = "patch_size"
        case intermediateSize = "intermediate_size", layerCount = "num_hidden_layers"
        case headCount = "num_attention_heads", channelCount = "num_channels"
        case hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps"
    }

    private enum PerceiverKeys: String, CodingKey {
        case useResampler = "use_resampler", latentCount = "resampler_n_latents", depth = "resampler_depth"
        case headCount = "resampler_n_heads", headDim = "resampler_head_dim"
        case qkLayerNorms = "qk_layer_norms_perceiver"
    }

    private struct RopeParameters: Decodable {
        var ropeType: String?
        var ropeTheta: Float?
        enum CodingKeys: String, CodingKey { case ropeType = "rope_type", type, ropeTheta = "rope_theta" }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            ropeType = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? c.decodeIfPresent(String.self, forKey: .type)
            ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        guard modelType == Self.modelType else { throw ConfigError.unknownModelType(modelType, supported: [Self.modelType]) }

        func act(_ name: String, key: String) throws -> Activation {
            guard let a = Activation(huggingFace: name) else {
                throw ConfigError.invalid(key: key, reason: "unsupported activation '\(name)'")
            }
            return a
        }

        var ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
        if let rope = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters) {
            if let type = rope.ropeType, type != "default" {
                throw ConfigError.invalid(key: "rope_parameters.rope_type", reason: "unsupported RoPE type '\(type)'")
            }
            ropeTheta = rope.ropeTheta ?? ropeTheta
        }
        if let scaling = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeScaling),
           let type = scaling.ropeType, type != "default" {
            throw ConfigError.invalid(key: "rope_scaling", reason: "unsupported RoPE scaling '\(type)'")
        }
        let eos: [Int]
        if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenID) {
            eos = [one]
        } else {
            eos = (try? c.decodeIfPresent([Int].self, forKey: .eosTokenID)) ?? []
        }
        text = Text(
            vocabSize: try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 32000,
            additionalVocabSize: try c.decodeIfPresent(Int.self, forKey: .additionalVocabSize) ?? 0,
            hiddenSize: try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 4096,
            intermediateSize: try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 11008,
            layerCount: try c.decodeIfPresent(Int.self, forKey: .layerCount) ?? 32,
            headCount: try c.decodeIfPresent(Int.self, forKey: .headCount) ?? 32,
            activation: try act(c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu", key: "hidden_act"),
            rmsNormEps: try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6,
            ropeTheta: ropeTheta,
            maxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048,
            tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false,
            bosTokenID: try? c.decodeIfPresent(Int.self, forKey: .bosTokenID),
            eosTokenIDs: eos,
            padTokenID: try? c.decodeIfPresent(Int.self, forKey: .padTokenID)
        )
        if let kv = try c.decodeIfPresent(Int.self, forKey: .keyValueHeadCount), kv != text.headCount {
            throw ConfigError.invalid(key: "num_key_value_heads", reason: "grouped-query attention is not part of IDEFICS")
        }
        if let alphaType = try c.decodeIfPresent(String.self, forKey: .alphaType), alphaType != "float" && alphaType != "vector" {
            throw ConfigError.invalid(key: "alpha_type", reason: "unknown alpha type '\(alphaType)'")
        }
        crossLayerInterval = try c.decodeIfPresent(Int.self, forKey: .crossLayerInterval) ?? 1
        qkLayerNorms = try c.decodeIfPresent(Bool.self, forKey: .qkLayerNorms) ?? false
        useResampler = try c.decodeIfPresent(Bool.self, forKey: .useResampler) ?? false
        imageTokenID = try c.decodeIfPresent(Int.self, forKey: .imageTokenID)
        quantization = try c.decodeIfPresent(Int8Quantization.self, forKey: .quantization)

        let v = try c.nestedContainer(keyedBy: VisionKeys.self, forKey: .visionConfig)
        let visionWidth = try v.decodeIfPresent(Int.self, forKey: .embedDim) ?? v.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 768
        vision = VisionTransformerConfig(
            hiddenSize: visionWidth,
            imageSize: try v.decodeIfPresent(Int.self, forKey: .imageSize) ?? 224,
            patchSize: try v.decodeIfPresent(Int.self, forKey: .patchSize) ?? 14,
            intermediateSize: try v.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 5120,
            layerCount: try v.decodeIfPresent(Int.self, forKey: .layerCount) ?? 32,
            headCount: try v.decodeIfPresent(Int.self, forKey: .headCount) ?? 16,
            channelCount: try v.decodeIfPresent(Int.self, forKey: .channelCount) ?? 3,
            activation: try act(v.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu", key: "vision_config.hidden_act"),
            layerNormEps: try v.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        )
        if c.contains(.perceiverConfig) {
            let p = try c.nestedContainer(keyedBy: PerceiverKeys.self, forKey: .perceiverConfig)
            resampler = PerceiverResamplerConfig(
                latentCount: try p.decodeIfPresent(Int.self, forKey: .latentCount) ?? 64,
                depth: try p.decodeIfPresent(Int.self, forKey: .depth) ?? 6,
                headCount: try p.decodeIfPresent(Int.self, forKey: .headCount) ?? 16,
                headDim: try p.decodeIfPresent(Int.self, forKey: .headDim) ?? 96,
                qkLayerNorms: try p.decodeIfPresent(Bool.self, forKey: .qkLayerNorms) ?? false
            )
        } else {
            resampler = PerceiverResamplerConfig(latentCount: 64, depth: 6, headCount: 16, headDim: 96, qkLayerNorms: false)
        }
        try validate()
    }

    /// Writes an IDEFICS `config.json` that transformers and this decoder both read back.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(text.vocabSize, forKey: .vocabSize)
        try c.encode(text.additionalVocabSize, forKey: .additionalVocabSize)
        try c.encode(text.hiddenSize, forKey: .hiddenSize)
        try c.encode(text.intermediateSize, forKey: .intermediateSize)
        try c.encode(text.layerCount, forKey: .layerCount)
        try c.encode(text.headCount, forKey: .headCount)
        try c.encode(text.activation.huggingFaceName, forKey: .hiddenAct)
        try c.encode(text.rmsNormEps, forKey: .rmsNormEps)
        try c.encode(text.ropeTheta, forKey: .ropeTheta)
        try c.encode(text.maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(text.tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(text.bosTokenID, forKey: .bosTokenID)
        if let eos = text.eosTokenIDs.first, text.eosTokenIDs.count == 1 {
            try c.encode(eos, forKey: .eosTokenID)
        } else if !text.eosTokenIDs.isEmpty {
            try c.encode(text.eosTokenIDs, forKey: .eosTokenID)
        }
        try c.encodeIfPresent(text.padTokenID, forKey: .padTokenID)
        try c.encode(crossLayerInterval, forKey: .crossLayerInterval)
        try c.encode(qkLayerNorms, forKey: .qkLayerNorms)
        try c.encode(useResampler, forKey: .useResampler)
        try c.encodeIfPresent(imageTokenID, forKey: .imageTokenID)
        try c.encodeIfPresent(quantization, forKey: .quantization)
        var v = c.nestedContainer(keyedBy: VisionKeys.self, forKey: .visionConfig)
        try v.encode(vision.hiddenSize, forKey: .embedDim)
        try v.encode(vision.imageSize, forKey: .imageSize)
        try v.encode(vision.patchSize, forKey: .patchSize)
        try v.encode(vision.intermediateSize, forKey: .intermediateSize)
        try v.encode(vision.layerCount, forKey: .layerCount)
        try v.encode(vision.headCount, forKey: .headCount)
        try v.encode(vision.channelCount, forKey: .channelCount)
        try v.encode(vision.activation.huggingFaceName, forKey: .hiddenAct)
        try v.encode(vision.layerNormEps, forKey: .layerNormEps)
        var p = c.nestedContainer(keyedBy: PerceiverKeys.self, forKey: .perceiverConfig)
        try p.encode(useResampler, forKey: .useResampler)
        try p.encode(resampler.latentCount, forKey: .latentCount)
        try p.encode(resampler.depth, forKey: .depth)
        try p.encode(resampler.headCount, forKey: .headCount)
        try p.encode(resampler.headDim, forKey: .headDim)
        try p.encode(resampler.qkLayerNorms, forKey: .qkLayerNorms)
    }

    /// Largest sizes accepted, far above any real model (IDEFICS-80B: width 8192, FFN 22016, 80
    /// layers, 32k vocabulary, 224 px images) and low enough that every tensor size, byte count and
    /// sum the model and the planner derive from them fits in Int: a config.json with an image of
    /// 2^38 pixels per side must be an error, not an overflow in `tokensPerImage`.
    enum SizeLimit {
        /// Any width (hidden, FFN, vision, a resampler's heads x head_dim) and any count of heads.
        static let width = 1 << 18
        static let vocabulary = 1 << 24
        /// Layer, block and latent counts.
        static let count = 1 << 16
        static let positions = 1 << 24
        /// Image side in pixels.
        static let imageSide = 1 << 16
    }

    /// Checks the invariants the model code relies on, naming the offending key.
    func validate() throws {
        func positive(_ value: Int, _ key: String) throws {
            if value <= 0 { throw ConfigError.invalid(key: key, reason: "must be positive, got \(value)") }
        }
        try positive(text.vocabSize, "vocab_size")
        try positive(text.hiddenSize, "hidden_size")
        try positive(text.intermediateSize, "intermediate_size")
        try positive(text.layerCount, "num_hidden_layers")
        try positive(text.headCount, "num_attention_heads")
        try positive(text.maxPositionEmbeddings, "max_position_embeddings")
        try positive(crossLayerInterval, "cross_layer_interval")
        try positive(vision.hiddenSize, "vision_config.embed_dim")
        try positive(vision.imageSize, "vision_config.image_size")
        try positive(vision.patchSize, "vision_config.patch_size")
        try positive(vision.intermediateSize, "vision_config.intermediate_size")
        try positive(vision.layerCount, "vision_config.num_hidden_layers")
        try positive(vision.headCount, "vision_config.num_attention_heads")
        if text.layerCount % crossLayerInterval != 0 {
            // transformers builds layers / interval blocks but looks one up before every multiple
            // of the interval, so other layer counts cannot run there either.
            throw ConfigError.invalid(key: "cross_layer_interval",
                                      reason: "num_hidden_layers \(text.layerCount) is not a multiple of \(crossLayerInterval)")
        }
        if text.additionalVocabSize < 0 {
            throw ConfigError.invalid(key: "additional_vocab_size", reason: "must not be negative")
        }
        if text.hiddenSize % text.headCount != 0 || text.headDim % 2 != 0 {
            throw ConfigError.invalid(key: "hidden_size", reason: "\(text.hiddenSize) is not an even head_dim times \(text.headCount) heads")
        }
        if vision.hiddenSize % vision.headCount != 0 {
            throw ConfigError.invalid(key: "vision_config.embed_dim", reason: "not divisible by \(vision.headCount) heads")
        }
        if vision.imageSize % vision.patchSize != 0 {
            throw ConfigError.invalid(key: "vision_config.image_size", reason: "\(vision.imageSize) is not a multiple of patch_size \(vision.patchSize)")
        }
        if vision.channelCount != 3 {
            throw ConfigError.invalid(key: "vision_config.num_channels", reason: "only RGB (3) is supported")
        }
        if useResampler {
            try positive(resampler.latentCount, "perceiver_config.resampler_n_latents")
            try positive(resampler.depth, "perceiver_config.resampler_depth")
            try positive(resampler.headCount, "perceiver_config.resampler_n_heads")
            try positive(resampler.headDim, "perceiver_config.resampler_head_dim")
        }
        // Sizes are positive from here on, so the product below cannot overflow.
        func atMost(_ value: Int, _ limit: Int, _ key: String) throws {
            if value > limit { throw ConfigError.invalid(key: key, reason: "\(value) is over \(limit), the largest supported") }
        }
        try atMost(text.vocabSize, SizeLimit.vocabulary, "vocab_size")
        try atMost(text.additionalVocabSize, SizeLimit.vocabulary, "additional_vocab_size")
        try atMost(text.hiddenSize, SizeLimit.width, "hidden_size")
        try atMost(text.intermediateSize, SizeLimit.width, "intermediate_size")
        try atMost(text.layerCount, SizeLimit.count, "num_hidden_layers")
        try atMost(text.headCount, SizeLimit.width, "num_attention_heads")
        try atMost(text.maxPositionEmbeddings, SizeLimit.positions, "max_position_embeddings")
        try atMost(vision.hiddenSize, SizeLimit.width, "vision_config.embed_dim")
        try atMost(vision.intermediateSize, SizeLimit.width, "vision_config.intermediate_size")
        try atMost(vision.layerCount, SizeLimit.count, "vision_config.num_hidden_layers")
        try atMost(vision.headCount, SizeLimit.width, "vision_config.num_attention_heads")
        try atMost(vision.imageSize, SizeLimit.imageSide, "vision_config.image_size")
        try atMost(vision.patchSize, SizeLimit.imageSide, "vision_config.patch_size")
        if useResampler {
            try atMost(resampler.latentCount, SizeLimit.count, "perceiver_config.resampler_n_latents")
            try atMost(resampler.depth, SizeLimit.count, "perceiver_config.resampler_depth")
            try atMost(resampler.headCount, SizeLimit.width, "perceiver_config.resampler_n_heads")
            try atMost(resampler.headDim, SizeLimit.width, "perceiver_config.resampler_head_dim")
            try atMost(resampler.headCount * resampler.headDim, SizeLimit.width,
                       "perceiver_config.resampler_n_heads x resampler_head_dim")
        }
    }
}
