import FlamingoCore

/// Token embeddings: ids < vocab_size read `embed_tokens.weight`; ids >= it read
/// `embed_tokens.additional_embedding.weight[id - vocab_size]` (IdeficsDecoupledEmbedding).
public struct TokenEmbedding: Sendable {
    let base: Tensor
    let additional: Tensor?
    public let vocabSize: Int

    /// `additionalVocabSize` 0: a plain embedding table.
    public init(_ w: WeightScope, vocabSize: Int, additionalVocabSize: Int = 0, width: Int) throws {
        base = try w.take("weight", shape: [vocabSize, width])
        additional = additionalVocabSize > 0
            ? try w.take("additional_embedding.weight", shape: [additionalVocabSize, width]) : nil
        self.vocabSize = vocabSize
    }

    /// ids (each < total vocabulary; checked by the caller) → [T, C]
    public func callAsFunction(_ ids: [Int]) -> Tensor {
        let c = base.dim(1)
        var out = Tensor(uninitialized: [ids.count, c])
        out.withMutableFloats { dst in
            for (i, id) in ids.enumerated() {
                let (table, row) = id < vocabSize ? (base, id) : (additional!, id - vocabSize)
                // Widened straight into the output row (no temporary row tensor per token).
                let o = dst.baseAddress! + i * c
                table.withUnsafeRawBytes { raw in
                    switch table.dtype {
                    case .f32:
                        let src = raw.bindMemory(to: Float.self).baseAddress! + row * c
                        for j in 0..<c { o[j] = src[j] }
                    case .bf16:
                        let src = raw.bindMemory(to: UInt16.self).baseAddress! + row * c
                        for j in 0..<c { o[j] = bf16ToFloat(src[j]) }
                    case .f16:
                        let src = raw.bindMemory(to: UInt16.self).baseAddress! + row * c
                        for j in 0..<c { o[j] = f16ToFloat(src[j]) }
                    case .i8:
                        let src = raw.bindMemory(to: Int8.self).baseAddress! + row * c
                        for j in 0..<c { o[j] = Float(src[j]) }
                    }
                }
            }
        }
        return out
    }
}

/// Final RMSNorm and the LM head: logits = concat(lm_head·h, additional_fc·h) (IdeficsDecoupledLinear).
public struct OutputHead: Sendable {
    let norm: RMSNorm
    let head: Linear
    let additional: Linear?

    /// Reads `<norm>.weight` and `<head>.weight` (and `<head>.additional_fc.weight`) from `w`, or,
    /// with `tiedEmbedding` and no head in the checkpoint, multiplies by the embedding table.
    public init(_ w: WeightScope, norm normKey: String, head headKey: String, vocabSize: Int, additionalVocabSize: Int = 0,
         width: Int, eps: Float, tiedEmbedding: TokenEmbedding?) throws {
        norm = try RMSNorm(w, normKey, width: width, eps: eps)
        if let tied = tiedEmbedding, !w.contains(headKey + ".weight") {
            head = Linear(weight: tied.base)
            additional = tied.additional.map { Linear(weight: $0) }
        } else {
            head = try Linear(w, headKey, in: width, out: vocabSize)
            additional = additionalVocabSize > 0
                ? try Linear(w.scope(headKey), "additional_fc", in: width, out: additionalVocabSize) : nil
        }
    }

    /// Weights streamed per decoded token.
    public var traffic: WeightTraffic { head.traffic + (additional?.traffic ?? WeightTraffic()) }

    /// h: [T, C] → logits [T, vocab + additional]
    public func callAsFunction(_ h: Tensor) -> Tensor {
        let normed = norm(h)
        let main = head(normed)
        guard let additional else { return main }
        let extra = additional(normed)
        let t = h.count / h.dim(-1)
        let (n1, n2) = (main.dim(-1), extra.dim(-1))
        var out = Tensor(zeros: [t, n1 + n2])
        out.withMutableFloats { o in
            main.withFloats { m in
                extra.withFloats { e in
                    for r in 0..<t {
                        for j in 0..<n1 { o[r * (n1 + n2) + j] = m[r * n1 + j] }
                        for j in 0..<n2 { o[r * (n1 + n2) + n1 + j] = e[r * n2 + j] }
                    }
                }
            }
        }
        return out
    }
}

/// The language model restricted to a range of decoder layers, with the gated cross-attention
/// blocks that run before those layers. A single process owns `0..<layerCount`; a pipeline
/// stage owns a sub-range. Same code either way.
public struct LanguageModel: Sendable {
    public let layerRange: Range<Int>
    public let layerCount: Int
    let placement: CrossAttentionPlacement
    let layers: [DecoderLayer]
    /// Gated cross-attention blocks by block index (only those before owned layers).
    let crossAttentionBlocks: [Int: GatedCrossAttentionBlock]
    /// Width of one position's keys (and values) in the self-attention cache.
    let keyValueWidth: Int

    /// Reads layer i from `layerScope(i)` and block b from `blockScope(b)`.
    public init(layers range: Range<Int>, layerCount: Int, decoder: DecoderLayerConfig, crossAttention: GatedCrossAttentionConfig,
         placement: CrossAttentionPlacement, layerScope: (Int) -> WeightScope, blockScope: (Int) -> WeightScope,
         progress: (String) -> Void = { _ in }) throws {
        precondition(range.lowerBound >= 0 && range.upperBound <= layerCount)
        layerRange = range
        self.layerCount = layerCount
        self.placement = placement
        layers = try range.map {
            progress("layer \($0 + 1)/\(layerCount)")
            return try DecoderLayer(layerScope($0), config: decoder)
        }
        // The key/value heads the layers hold (a tensor-parallel rank: its share).
        keyValueWidth = layers.first.map { $0.selfAttention.keyValueHeadCount * $0.selfAttention.headDim } ?? decoder.keyValueWidth
        var blocks: [Int: GatedCrossAttentionBlock] = [:]
        for layer in range {
            if let b = placement.block(beforeLayer: layer, layerCount: layerCount) {
                blocks[b] = try GatedCrossAttentionBlock(blockScope(b), config: crossAttention)
            }
        }
        crossAttentionBlocks = blocks
    }

    /// Weights the owned layers stream for each decoded token.
    public var traffic: WeightTraffic {
        layers.reduce(WeightTraffic()) { $0 + $1.traffic } + crossAttentionBlocks.values.reduce(WeightTraffic()) { $0 + $1.traffic }
    }

    /// How the owned layers' weight matrices are stored (the first layer's, f32 without layers).
    public var matrixFormat: WeightFormat { layers.first?.selfAttention.q.weight.format ?? .f32 }

    /// True when some owned layer has a gated cross-attention block before it (needs visual tokens).
    public var crossAttends: Bool { !crossAttentionBlocks.isEmpty }

    /// A fresh cache for one sequence on these layers.
    public func makeCache() -> SequenceCache {
        SequenceCache(layers: layerRange, width: keyValueWidth)
    }

    /// Attaches one image's visual tokens [L, Dv] to a sequence: each owned block computes and
    /// caches its K/V for it.
    public func attachImage(_ visualTokens: Tensor, to cache: inout SequenceCache) {
        for (index, block) in crossAttentionBlocks {
            cache.crossAttention[index, default: []].append(block.keysAndValues(visualTokens: visualTokens))
        }
        cache.imageCount += 1
    }

    /// Runs the owned layers on a microbatch: h [T, C] holds the next rows of several sequences
    /// (`slices[s]`, whose caches are `caches[s]`), updated in place.
    public func forward(_ h: inout Tensor, slices: [SequenceSlice], caches: inout [SequenceCache]) {
        precondition(slices.count == caches.count, "one cache per sequence")
        precondition(slices.last.map { $0.rows.upperBound == h.dim(0) } ?? (h.dim(0) == 0), "slices must cover the rows")
        for (s, slice) in slices.enumerated() {
            precondition(slice.imageIndex.allSatisfy { $0 == nil || $0! < caches[s].imageCount }, "image index beyond attached images")
        }
        for (i, layer) in layers.enumerated() {
            let index = layerRange.lowerBound + i
            if let b = placement.block(beforeLayer: index, layerCount: layerCount), let block = crossAttentionBlocks[b] {
                block(&h, slices: slices, caches: caches, block: b)
            }
            layer(&h, slices: slices, caches: &caches, layer: i)
        }
        for (s, slice) in slices.enumerated() { caches[s].length += slice.rows.count }
    }
}
