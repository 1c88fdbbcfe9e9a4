import FlamingoCore
import Foundation

// IDEFICS (HuggingFaceM4's reproduction of Flamingo), as transformers/models/idefics/modeling_idefics.py:
// CLIP ViT → Perceiver Resampler → LLaMA with a gated cross-attention block before every
// `cross_layer_interval`-th layer, decoupled embeddings and head for the extra image tokens.

/// An IDEFICS model (or the parts of it one process owns), loaded from an IDEFICS checkpoint.
/// Weights stay memory-mapped in their stored dtype.
public struct Idefics: VisionLanguageModel {
    public let config: IdeficsConfig
    public let parts: ModelParts
    public let weights: WeightStore
    let vision: VisionEncoder?
    let resampler: PerceiverResampler?
    let embedding: TokenEmbedding?
    let language: LanguageModel
    let head: OutputHead?

    public var configuration: any ModelConfiguration { config }

    /// `progress` is told each step of a long load ("layer 3/32").
    public init(config: IdeficsConfig, weights: WeightStore, parts: ModelParts, progress: (String) -> Void = { _ in }) throws {
        precondition(parts.layers.lowerBound >= 0 && parts.layers.upperBound <= config.text.layerCount)
        self.config = config
        self.parts = parts
        self.weights = weights
        let root = WeightScope(store: weights)
        let text = config.text
        if parts.vision { progress("vision encoder") }
        vision = parts.vision ? try VisionEncoder(root.scope(IdeficsWeightMap.vision), config: config.vision) : nil
        resampler = parts.vision && config.useResampler
            ? try PerceiverResampler(root.scope(IdeficsWeightMap.resampler), config: config.resampler, width: config.vision.hiddenSize)
            : nil
        let embedding = parts.embedding || (parts.outputHead && text.tieWordEmbeddings)
            ? try TokenEmbedding(root.scope(IdeficsWeightMap.embedding), vocabSize: text.vocabSize,
                                 additionalVocabSize: text.additionalVocabSize, width: text.hiddenSize)
            : nil
        self.embedding = parts.embedding ? embedding : nil
        // Layers and blocks are int8 when quantized; the vision side and embeddings keep their dtype.
        let int8 = root.int8Eligible()
        let layers = int8.sharded(parts.shard)  // a tensor-parallel rank holds its share of each layer and block
        language = try LanguageModel(
            layers: parts.layers, layerCount: text.layerCount, decoder: config.decoder, crossAttention: config.crossAttention,
            placement: config.placement, layerScope: { layers.scope(IdeficsWeightMap.layers, $0) },
            blockScope: { layers.scope(IdeficsWeightMap.crossAttentionLayers, $0) }, progress: progress)
        head = parts.outputHead
            ? try OutputHead(int8, norm: IdeficsWeightMap.finalNorm, head: IdeficsWeightMap.head, vocabSize: text.vocabSize,
                             additionalVocabSize: text.additionalVocabSize, width: text.hiddenSize, eps: text.rmsNormEps,
                             tiedEmbedding: text.tieWordEmbeddings ? embedding : nil)
            : nil
        try checkNothingLeftOver()
    }

    /// Every tensor under the owned parts' prefixes must have been read: leftovers mean the
    /// checkpoint and config disagree (e.g. qk norms present but `qk_layer_norms: false`).
    private func checkNothingLeftOver() throws {
        typealias Map = IdeficsWeightMap
        var prefixes: [String] = []
        if parts.vision { prefixes += [Map.vision + ".", Map.resampler + "."] }
        if parts.embedding { prefixes.append(Map.embedding + ".") }
        for layer in parts.layers {
            prefixes.append(Map.layer(layer))
            if let b = config.crossAttentionBlock(beforeLayer: layer) { prefixes.append(Map.crossAttentionLayer(b)) }
        }
        if parts.outputHead { prefixes += Map.outputHead }
        if parts == .all(config) { prefixes = [""] }
        let left = weights.untakenNames(prefixes: prefixes, ignoring: Map.isIgnorable)
        if !left.isEmpty { throw ModelLoadError.unexpectedTensors(names: left) }
    }

    /// pixels [3, S, S] → the image's visual tokens [L, Dv] (vision encoder, then resampler if used).
    public func visualTokens(pixels: Tensor) -> Tensor {
        guard let vision else { preconditionFailure("this process does not hold the vision encoder") }
        let features = vision(pixels)
        return resampler.map { $0(features) } ?? features
    }

    public func embed(_ ids: [Int]) -> Tensor {
        guard let embedding else { preconditionFailure("this process does not hold the embeddings") }
        return embedding(ids)
    }

    public func logits(_ h: Tensor) -> Tensor {
        guard let head else { preconditionFailure("this process does not hold the output head") }
        return head(h)
    }

    public func makeCache() -> SequenceCache { language.makeCache() }
    public func attachImage(_ visualTokens: Tensor, to cache: inout SequenceCache) { language.attachImage(visualTokens, to: &cache) }
    public var crossAttends: Bool { language.crossAttends }
    public func forward(_ h: inout Tensor, slices: [SequenceSlice], caches: inout [SequenceCache]) {
        language.forward(&h, slices: slices, caches: &caches)
    }

    public var decodeTraffic: WeightTraffic { language.traffic + (head?.traffic ?? WeightTraffic()) }
    public var matrixFormat: WeightFormat { language.matrixFormat }
}
