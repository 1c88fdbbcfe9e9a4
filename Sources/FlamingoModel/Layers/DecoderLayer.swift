import FlamingoCore

// LLaMA decoder layer as IdeficsDecoderLayer in transformers/models/idefics/modeling_idefics.py
// (and LlamaDecoderLayer, with grouped-query attention and scaled RoPE).

/// Shape of a LLaMA-style decoder layer.
public struct DecoderLayerConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var headCount: Int
    /// Key/value heads (grouped-query attention when fewer than `headCount`).
    public var keyValueHeadCount: Int
    public var headDim: Int
    public var activation: Activation
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var ropeScaling: RoPEScaling

    public init(hiddenSize: Int, intermediateSize: Int, headCount: Int, keyValueHeadCount: Int, headDim: Int,
                activation: Activation, rmsNormEps: Float, ropeTheta: Float, ropeScaling: RoPEScaling = .none) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.headCount = headCount
        self.keyValueHeadCount = keyValueHeadCount
        self.headDim = headDim
        self.activation = activation
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
    }

    /// Width of one position's keys (and values) in the cache.
    public var keyValueWidth: Int { keyValueHeadCount * headDim }
}

/// gate/up/down SwiGLU feed-forward (any gated activation).
/// With a tensor-parallel shard: this rank's channels of gate/up, the matching columns of down,
/// and one allreduce of down's partial sums.
struct GatedMLP: Sendable {
    let gate, up, down: Linear
    let activation: Activation
    let shard: TensorShard?

    init(_ w: WeightScope, width: Int, intermediate: Int, activation: Activation) throws {
        gate = try Linear(w, "gate_proj", in: width, out: intermediate, split: .outputs)
        up = try Linear(w, "up_proj", in: width, out: intermediate, split: .outputs)
        down = try Linear(w, "down_proj", in: intermediate, out: width, split: .inputs)
        self.activation = activation
        shard = w.shard
    }

    /// x: [T, C] → [T, C]
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (g, u) = Linear.apply(gate, up, to: x)
        let y = down(gatedActivate(gate: g, up: u, activation))
        return TensorShard.sum(y, over: shard)
    }

    var traffic: WeightTraffic { gate.traffic + up.traffic + down.traffic }
}

/// Causal self-attention with RoPE and a KV cache; grouped-query when there are fewer key/value
/// heads than query heads.
/// With a tensor-parallel shard: this rank's query and key/value heads, the matching columns of
/// o_proj, and one allreduce of its partial sums.
struct SelfAttention: Sendable {
    let q, k, v, o: Linear
    /// Heads this rank holds.
    let headCount, keyValueHeadCount, headDim: Int
    let rope: RotaryEmbedding
    let shard: TensorShard?

    init(_ w: WeightScope, config: DecoderLayerConfig) throws {
        let c = config.hiddenSize, inner = config.headCount * config.headDim
        let n = w.shard?.count ?? 1
        guard config.headCount % n == 0, config.keyValueHeadCount % n == 0 else {
            throw ModelLoadError.tensorParallel(name: w.prefix + "q_proj", reason:
                "\(config.headCount) query and \(config.keyValueHeadCount) key/value heads do not split over \(n) ranks")
        }
        q = try Linear(w, "q_proj", in: c, out: inner, split: .outputs)
        k = try Linear(w, "k_proj", in: c, out: config.keyValueWidth, split: .outputs)
        v = try Linear(w, "v_proj", in: c, out: config.keyValueWidth, split: .outputs)
        o = try Linear(w, "o_proj", in: inner, out: c, split: .inputs)
        headCount = config.headCount / n
        keyValueHeadCount = config.keyValueHeadCount / n
        headDim = config.headDim
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeTheta, scaling: config.ropeScaling)
        shard = w.shard
    }

    /// x: [T, C], rows of several sequences; each slice's rows continue that sequence at
    /// position `caches[s].length` and append to its cache of local layer `layer`.
    func callAsFunction(_ x: Tensor, slices: [SequenceSlice], caches: inout [SequenceCache], layer: Int) -> Tensor {
        let t = x.count / x.dim(-1)
        let c = headCount * headDim
        let (projectedQueries, projectedKeys, values) = Linear.apply(q, k, v, to: x)
        var queries = projectedQueries, keys = projectedKeys
        for (s, slice) in slices.enumerated() {
            rope.apply(&queries, rows: slice.rows, firstPosition: caches[s].length)
            rope.apply(&keys, rows: slice.rows, firstPosition: caches[s].length)
        }
        var out = Tensor(zeros: [t, c])
        for (s, slice) in slices.enumerated() {
            let start = caches[s].length
            caches[s].selfAttention[layer].append(keys: keys.rows(slice.rows), values: values.rows(slice.rows))
            out.withMutableFloats { o in
                queries.withFloats { qp in
                    caches[s].selfAttention[layer].withKeysAndValues { kp, vp in
                        attention(out: o.baseAddress! + slice.rows.lowerBound * c, q: qp.baseAddress! + slice.rows.lowerBound * c,
                                  k: kp, v: vp, t: slice.rows.count, s: start + slice.rows.count,
                                  heads: headCount, keyValueHeads: keyValueHeadCount, headDim: headDim, scale: 1 / Float(headDim).squareRoot(),
                                  mask: .causal(offset: start))
                    }
                }
            }
        }
        let y = o(out)
        return TensorShard.sum(y, over: shard)
    }

    var traffic: WeightTraffic { q.traffic + k.traffic + v.traffic + o.traffic }
}

/// h += attn(RMSNorm(h)); h += MLP(RMSNorm(h)).
public struct DecoderLayer: Sendable {
    let inputLayerNorm, postAttentionLayerNorm: RMSNorm
    let selfAttention: SelfAttention
    let mlp: GatedMLP

    init(_ w: WeightScope, config: DecoderLayerConfig) throws {
        let c = config.hiddenSize
        inputLayerNorm = try RMSNorm(w, "input_layernorm", width: c, eps: config.rmsNormEps)
        selfAttention = try SelfAttention(w.scope("self_attn"), config: config)
        postAttentionLayerNorm = try RMSNorm(w, "post_attention_layernorm", width: c, eps: config.rmsNormEps)
        mlp = try GatedMLP(w.scope("mlp"), width: c, intermediate: config.intermediateSize, activation: config.activation)
    }

    /// h: [T, C] (rows of several sequences), updated in place.
    func callAsFunction(_ h: inout Tensor, slices: [SequenceSlice], caches: inout [SequenceCache], layer: Int) {
        addScaled(&h, selfAttention(inputLayerNorm(h), slices: slices, caches: &caches, layer: layer))
        addScaled(&h, mlp(postAttentionLayerNorm(h)))
    }

    /// Weights streamed per token (norms held as f32).
    var traffic: WeightTraffic {
        selfAttention.traffic + mlp.traffic + WeightTraffic(bytes: 2 * inputLayerNorm.weight.byteCount)
    }
}
