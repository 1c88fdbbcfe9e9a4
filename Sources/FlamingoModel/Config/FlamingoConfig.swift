import FlamingoCore
import Foundation

/// A Flamingo-architecture model's shape, read from a Hugging Face IDEFICS `config.json`
/// (transformers' `IdeficsConfig`, with nested `vision_config` and `perceiver_config`).
/// Defaults are transformers' defaults; invariants are checked when decoding.
public struct FlamingoConfig: Codable, Sendable, Equatable {
    public var modelType: String
    public var text: Text
    public var vision: Vision
    public var resampler: Resampler
    /// A gated cross-attention block runs before LM layer i when i % interval == 0.
    public var crossLayerInterval: Int
    /// RMSNorm over head_dim on the cross-attention's q and k.
    public var qkLayerNorms: Bool
    public var useResampler: Bool
    /// `image_token_id` when config.json states it; else the tokenizer's `<image>`.
    public var imageTokenID: Int?
    /// `quantization_config` of a directory written by `flamingo quantize --dtype int8`.
    public var quantization: Quantization?

    /// How `flamingo quantize --dtype int8` stored the language model's weight matrices: each as
    /// `<name>.q8` (I8 [N, K]) + `<name>.q8_scale` (F16 [N, ceil(K/32)]), value = q · scale
    /// per block of 32 along K (DESIGN.md, README "int8 weights").
    public struct Quantization: Codable, Sendable, Equatable {
        public static let method = "flamingo_int8"
        public var method = Quantization.method
        public var blockSize = 32
        public var scaleDType = "F16"
        /// Tensor name prefixes whose `.weight` matrices are int8 (`WeightMap.isQuantizable`).
        public var modules: [String] = []

        public init(modules: [String]) { self.modules = modules }

        enum CodingKeys: String, CodingKey {
            case method = "quant_method", blockSize = "block_size", scaleDType = "scale_dtype", modules
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            method = try c.decodeIfPresent(String.self, forKey: .method) ?? ""
            blockSize = try c.decodeIfPresent(Int.self, forKey: .blockSize) ?? 0
            scaleDType = try c.decodeIfPresent(String.self, forKey: .scaleDType) ?? "F16"
            modules = try c.decodeIfPresent([String].self, forKey: .modules) ?? []
            guard method == Quantization.method, blockSize == 32, scaleDType == "F16" else {
                throw ConfigError.invalid(key: "quantization_config", reason:
                    "unsupported quantization (quant_method '\(method)', block_size \(blockSize), scale_dtype \(scaleDType)); this build reads \(Quantization.method) with block_size 32 and F16 scales")
            }
        }
    }

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

    /// The vision encoder (CLIP ViT in IDEFICS).
    public struct Vision: Codable, Sendable, Equatable {
        public var hiddenSize: Int
        public var imageSize: Int
        public var patchSize: Int
        public var intermediateSize: Int
        public var layerCount: Int
        public var headCount: Int
        public var channelCount: Int
        public var activation: Activation
        public var layerNormEps: Float

        public var patchesPerSide: Int { imageSize / patchSize }
        /// Class token + one token per patch.
        public var tokensPerImage: Int { patchesPerSide * patchesPerSide + 1 }
    }

    /// The Perceiver Resampler.
    public struct Resampler: Codable, Sendable, Equatable {
        public var latentCount: Int
        public var depth: Int
        public var headCount: Int
        public var headDim: Int
        public var qkLayerNorms: Bool
    }

    /// Visual tokens each image contributes to cross-attention.
    public var visualTokensPerImage: Int { useResampler ? resampler.latentCount : vision.tokensPerImage }
    /// Width of the visual tokens the LM's cross-attention reads (the vision width, also after resampling).
    public var visualTokenWidth: Int { vision.hiddenSize }
    /// Number of gated cross-attention blocks.
    public var crossAttentionBlockCount: Int { text.layerCount / crossLayerInterval }

    /// The gated cross-attention block that runs before `layer`, if any.
    public func crossAttentionBlock(beforeLayer layer: Int) -> Int? {
        guard layer % crossLayerInterval == 0 else { return nil }
        let block = layer / crossLayerInterval
        return block < crossAttentionBlockCount ? block : nil
    }
}

/// Errors reading a model's configuration.
public enum ConfigError: Error, LocalizedError, Equatable {
    case unreadable(path: String, reason: String)
    case unknownModelType(String)
    case invalid(key: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .unknownModelType(let type):
            "unknown model_type '\(type)' in config.json (supported: idefics)"
        case .invalid(let key, let reason): "config.json: \(key): \(reason)"
        }
    }
}

extension FlamingoConfig {
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

    /// Reads `config.json` from a model directory.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ConfigError.unreadable(path: url.path, reason: "no such file or not readable")
        }
        do {
            self = try JSONDecoder().decode(FlamingoConfig.self, from: data)
        } catch let error as ConfigError {
            throw error
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.keyNotFound(_, context), let DecodingError.dataCorrupted(context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ConfigError.invalid(key: path.isEmpty ? "(root)" : path, reason: context.debugDescription)
        } catch {
            throw ConfigError.unreadable(path: url.path, reason: "\(error)")
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        guard modelType == "idefics" else { throw ConfigError.unknownModelType(modelType) }

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
        quantization = try c.decodeIfPresent(Quantization.self, forKey: .quantization)

        let v = try c.nestedContainer(keyedBy: VisionKeys.self, forKey: .visionConfig)
        let visionWidth = try v.decodeIfPresent(Int.self, forKey: .embedDim) ?? v.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 768
        vision = Vision(
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
            resampler = Resampler(
                latentCount: try p.decodeIfPresent(Int.self, forKey: .latentCount) ?? 64,
                depth: try p.decodeIfPresent(Int.self, forKey: .depth) ?? 6,
                headCount: try p.decodeIfPresent(Int.self, forKey: .headCount) ?? 16,
                headDim: try p.decodeIfPresent(Int.self, forKey: .headDim) ?? 96,
                qkLayerNorms: try p.decodeIfPresent(Bool.self, forKey: .qkLayerNorms) ?? false
            )
        } else {
            resampler = Resampler(latentCount: 64, depth: 6, headCount: 16, headDim: 96, qkLayerNorms: false)
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
        try positive(crossLayerInterval, "cross_layer_interval")
        try positive(vision.hiddenSize, "vision_config.embed_dim")
        try positive(vision.imageSize, "vision_config.image_size")
        try positive(vision.patchSize, "vision_config.patch_size")
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
    }
}
