import FlamingoCore
import Foundation

// What the runtime, the planner, the CLI and the server know of a model, whatever its
// architecture. An architecture (one folder under Architectures/) provides a configuration type
// read from config.json and a model type built from it; ModelRegistry maps `model_type` to it.

/// The language side's shapes and ids that requests and scheduling depend on.
public struct LanguageShape: Sendable, Equatable {
    /// Ids the model accepts and produces (`0..<vocabularySize`).
    public var vocabularySize: Int
    /// Width of the hidden states passed between pipeline stages.
    public var hiddenSize: Int
    public var layerCount: Int
    /// Prompt plus generated tokens may not exceed this.
    public var maxPositions: Int
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    public init(vocabularySize: Int, hiddenSize: Int, layerCount: Int, maxPositions: Int, bosTokenID: Int?, eosTokenIDs: [Int]) {
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.maxPositions = maxPositions
        self.bosTokenID = bosTokenID
        self.eosTokenIDs = eosTokenIDs
    }
}

/// A model's configuration (config.json), as an architecture reads it. Encoding it writes a
/// config.json its architecture reads back.
public protocol ModelConfiguration: Sendable, Encodable {
    /// config.json `model_type`, the registry key.
    var modelType: String { get }
    var language: LanguageShape { get }
    /// Each image enters the vision stage as normalised pixels [channels, S, S] with this S.
    var imageSize: Int { get }
    /// One image's visual tokens [visualTokensPerImage, visualTokenWidth], as the vision stage
    /// sends them to the stages that cross-attend.
    var visualTokensPerImage: Int { get }
    var visualTokenWidth: Int { get }
    /// config.json's image token id, when it states one (else the tokenizer's `<image>`).
    var imageTokenID: Int? { get }
    /// Set for a directory written by `flamingo quantize --dtype int8`.
    var quantization: Int8Quantization? { get }
    /// Whether LM layer `layer` cross-attends to visual tokens (the block placement rule).
    func crossAttends(layer: Int) -> Bool
    /// For each prompt token, the index of the image it cross-attends to, or nil (the
    /// architecture's masking rule). `tokens` mark images with `imageTokenID`.
    func imageIndices(tokens: [Int], imageTokenID: Int) -> [Int?]
    /// Builds `parts` of the model from `weights` (a checkpoint, synthetic weights or a
    /// shapes-only dry run). Fails, naming the tensor, on a missing, misshapen or stray tensor.
    /// `progress` is told each step of a long load ("layer 3/32").
    func loadModel(weights: WeightStore, parts: ModelParts, progress: (String) -> Void) throws -> any VisionLanguageModel
    /// The same architecture with `layerCount` LM layers (synthetic models of a preset's width).
    func withLayerCount(_ layerCount: Int) throws -> any ModelConfiguration
    /// Human-readable lines for `flamingo info` (label, text).
    var summary: [(label: String, text: String)] { get }
}

extension ModelConfiguration {
    public func loadModel(weights: WeightStore, parts: ModelParts) throws -> any VisionLanguageModel {
        try loadModel(weights: weights, parts: parts, progress: { _ in })
    }

    /// Every part: what one process holds.
    public var allParts: ModelParts { ModelParts(vision: true, embedding: true, layers: 0..<language.layerCount, outputHead: true) }
}

/// Which parts of the model a process holds. A single process holds everything; a pipeline stage
/// holds a layer range, plus the input side (vision, embeddings) or the output head.
public struct ModelParts: Sendable, Equatable {
    /// The vision stage: image pixels to visual tokens (vision encoder and resampler).
    public var vision: Bool
    public var embedding: Bool
    public var layers: Range<Int>
    public var outputHead: Bool
    /// On a tensor-parallel rank: the layers' share it holds (nil: whole layers).
    public var shard: TensorShard?

    public init(vision: Bool, embedding: Bool, layers: Range<Int>, outputHead: Bool, shard: TensorShard? = nil) {
        self.vision = vision
        self.embedding = embedding
        self.layers = layers
        self.outputHead = outputHead
        self.shard = shard
    }

    public static func all(_ config: any ModelConfiguration) -> ModelParts { config.allParts }
}

/// Weights a decoded token streams and the multiply-adds it does with them.
public struct WeightTraffic: Sendable, Equatable {
    public var bytes: Int
    public var multiplyAdds: Int

    public init(bytes: Int = 0, multiplyAdds: Int = 0) {
        self.bytes = bytes
        self.multiplyAdds = multiplyAdds
    }

    public static func + (a: WeightTraffic, b: WeightTraffic) -> WeightTraffic {
        WeightTraffic(bytes: a.bytes + b.bytes, multiplyAdds: a.multiplyAdds + b.multiplyAdds)
    }
}

/// The parts of a model one process holds, loaded. A single process and every pipeline stage run
/// the same code: the stage calls the parts it owns.
public protocol VisionLanguageModel: Sendable {
    var configuration: any ModelConfiguration { get }
    var parts: ModelParts { get }
    /// Where the weights came from; `weights.takenBytes` is what this process maps or made.
    var weights: WeightStore { get }

    /// pixels [3, S, S] → one image's visual tokens [L, Dv]. Needs `parts.vision`.
    func visualTokens(pixels: Tensor) -> Tensor
    /// ids (each checked < vocabulary size by the caller) → h [T, C]. Needs `parts.embedding`.
    func embed(_ ids: [Int]) -> Tensor
    /// h [T, C] → logits [T, vocabulary]. Needs `parts.outputHead`.
    func logits(_ h: Tensor) -> Tensor

    /// A fresh cache for one sequence on the owned layers.
    func makeCache() -> SequenceCache
    /// Attaches one image's visual tokens [L, Dv] to a sequence: the owned cross-attending layers
    /// compute and cache their keys and values for it.
    func attachImage(_ visualTokens: Tensor, to cache: inout SequenceCache)
    /// True when some owned layer cross-attends (the stage needs every request's visual tokens).
    var crossAttends: Bool { get }
    /// Runs the owned layers on a microbatch: h [T, C] holds the next rows of several sequences
    /// (`slices[s]`, whose caches are `caches[s]`), updated in place.
    func forward(_ h: inout Tensor, slices: [SequenceSlice], caches: inout [SequenceCache])

    /// What the owned layers and head stream per decoded token (per-image work excluded).
    var decodeTraffic: WeightTraffic { get }
    /// How the owned layers' weight matrices are stored (f32 when no layers are owned).
    var matrixFormat: WeightFormat { get }
}

extension VisionLanguageModel {
    /// Bytes of weights this process holds (mapped, or made for a synthetic model).
    public var weightBytes: Int { weights.takenBytes }

    /// One sequence: h [T, C] are its next T positions; `imageIndex[t]` is the image token t sees.
    public func forward(_ h: inout Tensor, imageIndex: [Int?], cache: inout SequenceCache) {
        var caches = [cache]
        cache = SequenceCache(layers: 0..<0, width: 0)  // drop our reference so the cache is not copied
        forward(&h, slices: [SequenceSlice(rows: 0..<h.dim(0), imageIndex: imageIndex)], caches: &caches)
        cache = caches[0]
    }
}

/// How `flamingo quantize --dtype int8` stores the weight matrices its architecture marks int8
/// (config.json `quantization_config`): each as `<name>.q8` (I8 [N, K]) + `<name>.q8_scale`
/// (F16 [N, ceil(K/32)]), value = q · scale per block of 32 along K (DESIGN.md, README "int8 weights").
public struct Int8Quantization: Codable, Sendable, Equatable {
    public static let method = "flamingo_int8"
    public var method = Int8Quantization.method
    public var blockSize = 32
    public var scaleDType = "F16"
    /// Tensor name prefixes whose `.weight` matrices are int8 (informational).
    public var modules: [String] = []
    public var layout = "<name>.q8: I8 [N, K]; <name>.q8_scale: F16 [N, ceil(K/32)]; value = q * scale per block of 32 along K"

    public init(modules: [String]) { self.modules = modules }

    enum CodingKeys: String, CodingKey {
        case method = "quant_method", blockSize = "block_size", scaleDType = "scale_dtype", modules, layout
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        method = try c.decodeIfPresent(String.self, forKey: .method) ?? ""
        blockSize = try c.decodeIfPresent(Int.self, forKey: .blockSize) ?? 0
        scaleDType = try c.decodeIfPresent(String.self, forKey: .scaleDType) ?? "F16"
        modules = try c.decodeIfPresent([String].self, forKey: .modules) ?? []
        layout = try c.decodeIfPresent(String.self, forKey: .layout) ?? layout
        guard method == Int8Quantization.method, blockSize == 32, scaleDType == "F16" else {
            throw ConfigError.invalid(key: "quantization_config", reason:
                "unsupported quantization (quant_method '\(method)', block_size \(blockSize), scale_dtype \(scaleDType)); this build reads \(Int8Quantization.method) with block_size 32 and F16 scales")
        }
    }
}

/// Errors reading a model's configuration.
public enum ConfigError: Error, LocalizedError, Equatable {
    case unreadable(path: String, reason: String)
    case unknownModelType(String, supported: [String])
    case invalid(key: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .unknownModelType(let type, let supported):
            "unknown model_type '\(type)' in config.json (supported: \(supported.joined(separator: ", ")))"
        case .invalid(let key, let reason): "config.json: \(key): \(reason)"
        }
    }
}
