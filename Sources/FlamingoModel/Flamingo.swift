import FlamingoCore
import Foundation

/// Which parts of the model a process holds. A single process holds everything; a pipeline stage
/// holds a layer range, plus the input side (vision, resampler, embeddings) or the output head.
public struct ModelParts: Sendable, Equatable {
    public var vision: Bool
    public var embedding: Bool
    public var layers: Range<Int>
    public var outputHead: Bool

    public init(vision: Bool, embedding: Bool, layers: Range<Int>, outputHead: Bool) {
        self.vision = vision
        self.embedding = embedding
        self.layers = layers
        self.outputHead = outputHead
    }

    public static func all(_ config: FlamingoConfig) -> ModelParts {
        ModelParts(vision: true, embedding: true, layers: 0..<config.text.layerCount, outputHead: true)
    }
}

/// A Flamingo model (or the parts of it one process owns), loaded from an IDEFICS checkpoint
/// directory. Weights stay memory-mapped in their stored dtype.
public struct Flamingo: Sendable {
    public let config: FlamingoConfig
    public let parts: ModelParts
    public let vision: VisionEncoder?
    public let resampler: PerceiverResampler?
    public let embedding: TokenEmbedding?
    public let language: LanguageModel
    public let head: OutputHead?
    public let weights: WeightStore

    /// Loads `parts` (default: all) of the model in `directory`. Fails, naming file and tensor,
    /// on a missing, misshapen or unexpected tensor.
    public init(directory: URL, parts: ModelParts? = nil) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelLoadError.missingDirectory(directory.path)
        }
        let config = try FlamingoConfig(contentsOf: directory.appendingPathComponent("config.json"))
        try self.init(config: config, weights: WeightStore(directory: directory), parts: parts ?? .all(config))
    }

    /// `progress` is told each step of a long load ("layer 3/32").
    public init(config: FlamingoConfig, weights: WeightStore, parts: ModelParts,
                progress: (String) -> Void = { _ in }) throws {
        precondition(parts.layers.lowerBound >= 0 && parts.layers.upperBound <= config.text.layerCount)
        self.config = config
        self.parts = parts
        self.weights = weights
        let root = WeightScope(store: weights)
        if parts.vision { progress("vision encoder") }
        vision = parts.vision ? try VisionEncoder(root.scope(WeightMap.vision), config: config.vision) : nil
        resampler = parts.vision && config.useResampler
            ? try PerceiverResampler(root.scope(WeightMap.resampler), config: config) : nil
        let embedding = parts.embedding || (parts.outputHead && config.text.tieWordEmbeddings)
            ? try TokenEmbedding(root.scope(WeightMap.embedding), config: config.text) : nil
        self.embedding = parts.embedding ? embedding : nil
        language = try LanguageModel(root.scope("model"), config: config, layers: parts.layers, progress: progress)
        head = parts.outputHead ? try OutputHead(root, config: config.text, tiedEmbedding: embedding) : nil
        try checkNothingLeftOver()
    }

    /// Every tensor under the owned parts' prefixes must have been read: leftovers mean the
    /// checkpoint and config disagree (e.g. qk norms present but `qk_layer_norms: false`).
    private func checkNothingLeftOver() throws {
        var prefixes: [String] = []
        if parts.vision { prefixes += [WeightMap.vision + ".", WeightMap.resampler + "."] }
        if parts.embedding { prefixes.append(WeightMap.embedding + ".") }
        for layer in parts.layers {
            prefixes.append(WeightMap.layer(layer))
            if let b = config.crossAttentionBlock(beforeLayer: layer) { prefixes.append(WeightMap.crossAttentionLayer(b)) }
        }
        if parts.outputHead { prefixes += WeightMap.outputHead }
        if parts == .all(config) { prefixes = [""] }
        let left = weights.untakenNames(prefixes: prefixes, ignoring: WeightMap.isIgnorable)
        if !left.isEmpty { throw ModelLoadError.unexpectedTensors(names: left) }
    }

    /// pixels [3, S, S] → the image's visual tokens [L, Dv] (vision encoder, then resampler if used).
    public func visualTokens(pixels: Tensor) -> Tensor {
        guard let vision else { preconditionFailure("this process does not hold the vision encoder") }
        let features = vision(pixels)
        return resampler.map { $0(features) } ?? features
    }

    /// Bytes of weights this process holds (mapped, or made for a synthetic model).
    public var weightBytes: Int { weights.takenBytes }
}
