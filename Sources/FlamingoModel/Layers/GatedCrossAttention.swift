import Foundation
import FlamingoCore

// GATED XATTN-DENSE, as IdeficsGatedCrossAttentionLayer in transformers/models/idefics/modeling_idefics.py:
//   h += tanh(alpha_cross_attn) · gate_t · o_proj(xattn(RMSNorm(h), visual tokens of t's image))
//   h += tanh(alpha_dense) · MLP(RMSNorm(h))
// gate_t is 0 for a token that sees no image; the dense branch runs for every token.

/// Which LM layers have a gated cross-attention block before them, and its index.
public enum CrossAttentionPlacement: Sendable, Equatable {
    /// Before layer i when i % interval == 0 (IDEFICS's `cross_layer_interval`, the paper's
    /// "every k-th layer"); block i / interval, layerCount / interval blocks.
    case everyNthLayer(Int)
    /// Before each listed layer, in order (block j before layers[j]).
    case beforeLayers([Int])

    /// The block before `layer` of a `layerCount`-layer LM, if any.
    public func block(beforeLayer layer: Int, layerCount: Int) -> Int? {
        switch self {
        case .everyNthLayer(let interval):
            guard layer % interval == 0 else { return nil }
            let block = layer / interval
            return block < layerCount / interval ? block : nil
        case .beforeLayers(let layers):
            return layers.firstIndex(of: layer)
        }
    }

    public func blockCount(layerCount: Int) -> Int {
        switch self {
        case .everyNthLayer(let interval): layerCount / interval
        case .beforeLayers(let layers): layers.count
        }
    }
}

/// Shape of a gated cross-attention block.
public struct GatedCrossAttentionConfig: Sendable, Equatable {
    public var hiddenSize: Int
    /// Width of the visual tokens keys and values are projected from.
    public var visualTokenWidth: Int
    public var headCount: Int
    public var intermediateSize: Int
    public var activation: Activation
    public var rmsNormEps: Float
    /// RMSNorm over head_dim on q and k.
    public var qkLayerNorms: Bool

    public init(hiddenSize: Int, visualTokenWidth: Int, headCount: Int, intermediateSize: Int, activation: Activation,
                rmsNormEps: Float, qkLayerNorms: Bool) {
        self.hiddenSize = hiddenSize
        self.visualTokenWidth = visualTokenWidth
        self.headCount = headCount
        self.intermediateSize = intermediateSize
        self.activation = activation
        self.rmsNormEps = rmsNormEps
        self.qkLayerNorms = qkLayerNorms
    }
}

/// A learned tanh gate: one scalar (`alpha_type: float`) or one value per channel (`vector`).
struct TanhGate: Sendable {
    let values: [Float]

    init(_ w: WeightScope, _ key: String, width: Int) throws {
        let stored = w.storedShape(key) ?? [1]
        let shape = stored.reduce(1, *) == 1 ? stored : [1, 1, width]
        values = try w.take(key, shape: shape).scalars.map { tanh($0) }
    }

    /// h += gate · x
    func addGated(_ h: inout Tensor, _ x: Tensor) {
        if values.count == 1 {
            addScaled(&h, x, scale: values[0])
            return
        }
        let c = values.count
        h.withMutableFloats { hv in
            x.withFloats { xv in
                for i in 0..<hv.count { hv[i] += values[i % c] * xv[i] }
            }
        }
    }
}

public struct GatedCrossAttentionBlock: Sendable {
    let inputLayerNorm, postAttentionLayerNorm: RMSNorm
    let q, k, v, o: Linear
    let qLayerNorm, kLayerNorm: RMSNorm?
    let mlp: GatedMLP
    let attentionGate, denseGate: TanhGate
    /// Heads this rank holds (all without tensor parallelism).
    let headCount: Int
    let shard: TensorShard?

    init(_ w: WeightScope, config: GatedCrossAttentionConfig) throws {
        let c = config.hiddenSize
        let kv = config.visualTokenWidth
        let headDim = c / config.headCount
        let n = w.shard?.count ?? 1
        guard config.headCount % n == 0 else {
            throw ModelLoadError.tensorParallel(name: w.prefix + "cross_attn", reason: "\(config.headCount) heads do not split over \(n) ranks")
        }
        inputLayerNorm = try RMSNorm(w, "input_layernorm", width: c, eps: config.rmsNormEps)
        postAttentionLayerNorm = try RMSNorm(w, "post_attention_layernorm", width: c, eps: config.rmsNormEps)
        let a = w.scope("cross_attn")
        q = try Linear(a, "q_proj", in: c, out: c, split: .outputs)
        k = try Linear(a, "k_proj", in: kv, out: c, split: .outputs)
        v = try Linear(a, "v_proj", in: kv, out: c, split: .outputs)
        o = try Linear(a, "o_proj", in: c, out: c, split: .inputs)
        qLayerNorm = config.qkLayerNorms ? try RMSNorm(a, "q_layer_norm", width: headDim, eps: config.rmsNormEps) : nil
        kLayerNorm = config.qkLayerNorms ? try RMSNorm(a, "k_layer_norm", width: headDim, eps: config.rmsNormEps) : nil
        mlp = try GatedMLP(w.scope("mlp"), width: c, intermediate: config.intermediateSize, activation: config.activation)
        attentionGate = try TanhGate(w, "alpha_cross_attn", width: c)
        denseGate = try TanhGate(w, "alpha_dense", width: c)
        headCount = config.headCount / n
        shard = w.shard
    }

    /// Weights streamed per decoded token (k/v projections run once per image, not per token).
    var traffic: WeightTraffic { q.traffic + o.traffic + mlp.traffic }

    /// Projects one image's visual tokens [L, Dv] to this block's keys and values (done once per image).
    public func keysAndValues(visualTokens: Tensor) -> CrossAttentionKV {
        let (projectedKeys, values) = Linear.apply(k, v, to: visualTokens)
        var keys = projectedKeys
        kLayerNorm?.applyPerSlice(&keys)
        return CrossAttentionKV(keys: keys, values: values)
    }

    /// h: [T, C] (rows of several sequences) in place. Row r of slice s sees image
    /// `slices[s].imageIndex[r]` of that sequence, whose K/V for this block are in `caches[s]`.
    func callAsFunction(_ h: inout Tensor, slices: [SequenceSlice], caches: [SequenceCache], block: Int) {
        let t = h.count / h.dim(-1)
        // Every rank of a tensor-parallel group takes this branch or none (same slices).
        if slices.contains(where: { $0.imageIndex.contains { $0 != nil } }) {
            var queries = q(inputLayerNorm(h))
            qLayerNorm?.applyPerSlice(&queries)
            let c = queries.dim(-1)  // this rank's heads
            let headDim = c / headCount
            var attended = Tensor(zeros: [t, c])
            attended.withMutableFloats { out in
                queries.withFloats { qp in
                    for (s, slice) in slices.enumerated() {
                        let images = caches[s].crossAttention[block] ?? []
                        let imageIndex = slice.imageIndex
                        // Runs of consecutive tokens that see the same image attend together.
                        var start = 0
                        while start < imageIndex.count {
                            var end = start + 1
                            while end < imageIndex.count && imageIndex[end] == imageIndex[start] { end += 1 }
                            if let image = imageIndex[start] {
                                let kv = images[image]
                                let row = slice.rows.lowerBound + start
                                kv.keys.withFloats { kp in
                                    kv.values.withFloats { vp in
                                        attention(out: out.baseAddress! + row * c, q: qp.baseAddress! + row * c,
                                                  k: kp.baseAddress!, v: vp.baseAddress!, t: end - start,
                                                  s: kv.keys.dim(0), heads: headCount, headDim: headDim,
                                                  scale: 1 / Float(headDim).squareRoot(), mask: .none)
                                    }
                                }
                            }
                            start = end
                        }
                    }
                }
            }
            // Rows of tokens without an image stay zero, and o_proj has no bias: the gate is exact.
            let y = o(attended)
            attentionGate.addGated(&h, TensorShard.sum(y, over: shard))
        }
        denseGate.addGated(&h, mlp(postAttentionLayerNorm(h)))
    }
}
