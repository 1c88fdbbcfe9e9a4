import FlamingoCore

// Perceiver Resampler as in transformers/models/idefics/perceiver.py (transformers 5.24).
// Every LayerNorm here uses PyTorch's default eps 1e-5, whatever the config says.
private let resamplerEps: Float = 1e-5

/// Latents attend to [context ; latents]: q from LN(latents), k/v from concat(LN(context), LN(latents)).
struct PerceiverAttention: Sendable {
    let contextLayerNorm, latentsLayerNorm: LayerNorm
    let qLayerNorm, kLayerNorm: LayerNorm?
    let q, k, v, output: Linear
    let headCount, headDim: Int

    init(_ w: WeightScope, width: Int, headCount: Int, headDim: Int, qkLayerNorms: Bool) throws {
        contextLayerNorm = try LayerNorm(w, "context_layer_norm", width: width, eps: resamplerEps)
        latentsLayerNorm = try LayerNorm(w, "latents_layer_norm", width: width, eps: resamplerEps)
        qLayerNorm = qkLayerNorms ? try LayerNorm(w, "q_layer_norm", width: headDim, eps: resamplerEps) : nil
        kLayerNorm = qkLayerNorms ? try LayerNorm(w, "k_layer_norm", width: headDim, eps: resamplerEps) : nil
        let inner = headCount * headDim
        q = try Linear(w, "q_proj", in: width, out: inner)
        k = try Linear(w, "k_proj", in: width, out: inner)
        v = try Linear(w, "v_proj", in: width, out: inner)
        output = try Linear(w, "output_proj", in: inner, out: width)
        self.headCount = headCount
        self.headDim = headDim
    }

    /// context: [N, D], latents: [L, D] → [L, D]
    func callAsFunction(context: Tensor, latents: Tensor) -> Tensor {
        let normedLatents = latentsLayerNorm(latents)
        let both = concatRows(contextLayerNorm(context), normedLatents)
        var queries = q(normedLatents)
        let (projectedKeys, values) = Linear.apply(k, v, to: both)
        var keys = projectedKeys
        qLayerNorm?.applyPerSlice(&queries)
        kLayerNorm?.applyPerSlice(&keys)
        let a = attention(q: queries, k: keys, v: values, heads: headCount,
                          scale: 1 / Float(headDim).squareRoot(), mask: .none)
        return output(a)
    }
}

/// LN → fc → ReLU → c_proj, no biases.
struct PerceiverMLP: Sendable {
    let layerNorm: LayerNorm
    let fc, cProj: Linear

    init(_ w: WeightScope, width: Int, intermediate: Int) throws {
        layerNorm = try LayerNorm(w, "ln", width: width, eps: resamplerEps)
        fc = try Linear(w, "fc", in: width, out: intermediate)
        cProj = try Linear(w, "c_proj", in: intermediate, out: width)
    }

    func callAsFunction(_ x: Tensor) -> Tensor { cProj(activate(fc(layerNorm(x)), .relu)) }
}

/// Shape of a Perceiver Resampler (IDEFICS `perceiver_config`).
public struct PerceiverResamplerConfig: Codable, Sendable, Equatable {
    public var latentCount: Int
    public var depth: Int
    public var headCount: Int
    public var headDim: Int
    public var qkLayerNorms: Bool

    public init(latentCount: Int, depth: Int, headCount: Int, headDim: Int, qkLayerNorms: Bool) {
        self.latentCount = latentCount
        self.depth = depth
        self.headCount = headCount
        self.headDim = headDim
        self.qkLayerNorms = qkLayerNorms
    }
}

/// Compresses one image's visual features to a fixed number of latents.
public struct PerceiverResampler: Sendable {
    let latents: Tensor
    let blocks: [(attention: PerceiverAttention, mlp: PerceiverMLP)]
    let finalLayerNorm: LayerNorm

    /// `width`: the visual features' (and latents') width.
    public init(_ w: WeightScope, config r: PerceiverResamplerConfig, width d: Int) throws {
        latents = try w.take("latents", shape: [r.latentCount, d]).toF32()
        blocks = try (0..<r.depth).map { i in
            let b = w.scope("blocks", i)
            return (try PerceiverAttention(b.scope(0), width: d, headCount: r.headCount, headDim: r.headDim, qkLayerNorms: r.qkLayerNorms),
                    try PerceiverMLP(b.scope(1), width: d, intermediate: 4 * d))
        }
        finalLayerNorm = try LayerNorm(w, "layer_norm", width: d, eps: resamplerEps)
    }

    /// context: [N, D] one image's features → [latentCount, D]
    public func callAsFunction(_ context: Tensor) -> Tensor {
        var x = latents
        for block in blocks {
            addScaled(&x, block.attention(context: context, latents: x))
            addScaled(&x, block.mlp(x))
        }
        return finalLayerNorm(x)
    }
}

/// [A; B] along rows: a [Na, C], b [Nb, C] → [Na + Nb, C].
func concatRows(_ a: Tensor, _ b: Tensor) -> Tensor {
    let c = a.dim(-1)
    precondition(b.dim(-1) == c)
    var out = Tensor(zeros: [a.count / c + b.count / c, c])
    out.withMutableFloats { o in
        a.withFloats { ap in
            for i in 0..<ap.count { o[i] = ap[i] }
            b.withFloats { bp in
                for i in 0..<bp.count { o[ap.count + i] = bp[i] }
            }
        }
    }
    return out
}
