import FlamingoCore

// CLIP ViT as IDEFICS uses it: transformers/models/idefics/vision.py (transformers 5.24).

/// Shape of a CLIP-style vision transformer (IDEFICS `vision_config`).
public struct VisionTransformerConfig: Codable, Sendable, Equatable {
    public var hiddenSize: Int
    public var imageSize: Int
    public var patchSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var channelCount: Int
    public var activation: Activation
    public var layerNormEps: Float

    public init(hiddenSize: Int, imageSize: Int, patchSize: Int, intermediateSize: Int, layerCount: Int, headCount: Int,
                channelCount: Int, activation: Activation, layerNormEps: Float) {
        self.hiddenSize = hiddenSize
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.channelCount = channelCount
        self.activation = activation
        self.layerNormEps = layerNormEps
    }

    public var patchesPerSide: Int { imageSize / patchSize }
    /// Class token + one token per patch.
    public var tokensPerImage: Int { patchesPerSide * patchesPerSide + 1 }
}

/// A stride-p convolution without bias over non-overlapping p x p patches, done as one matmul over
/// the unfolded patches (ViT / CLIP `patch_embedding`).
public struct PatchEmbedding: Sendable {
    /// Conv weight [D, C, p, p] viewed as [D, C·p·p].
    let weight: Tensor
    let channelCount, patchSize: Int

    /// Reads `<key>` [width, channels, p, p].
    public init(_ w: WeightScope, _ key: String, width: Int, channelCount: Int, patchSize: Int) throws {
        weight = try w.take(key, shape: [width, channelCount, patchSize, patchSize])
            .reshaped([width, channelCount * patchSize * patchSize])
        self.channelCount = channelCount
        self.patchSize = patchSize
    }

    /// pixels [C, S, S] → [(S/p)², D], patches in row-major order.
    public func callAsFunction(_ pixels: Tensor) -> Tensor {
        let c = channelCount, p = patchSize, s = pixels.dim(-1), g = s / p
        precondition(pixels.shape == [c, s, s] && s % p == 0, "patch embedding expects [\(c), S, S], got \(pixels.shape)")
        // Unfold patches in the conv weight's (channel, row, column) order.
        var patches = Tensor(zeros: [g * g, c * p * p])
        patches.withMutableFloats { dst in
            pixels.withFloats { src in
                for py in 0..<g {
                    for px in 0..<g {
                        var o = (py * g + px) * c * p * p
                        for ch in 0..<c {
                            for ky in 0..<p {
                                let row = src.baseAddress! + ch * s * s + (py * p + ky) * s + px * p
                                for kx in 0..<p { dst[o] = row[kx]; o += 1 }
                            }
                        }
                    }
                }
            }
        }
        return linear(patches, weight: weight)
    }
}

/// Multi-head self-attention with biases, no mask (every patch sees every patch).
struct VisionAttention: Sendable {
    let q, k, v, out: Linear
    let headCount: Int

    init(_ w: WeightScope, width: Int, headCount: Int) throws {
        q = try Linear(w, "q_proj", in: width, out: width, bias: true)
        k = try Linear(w, "k_proj", in: width, out: width, bias: true)
        v = try Linear(w, "v_proj", in: width, out: width, bias: true)
        out = try Linear(w, "out_proj", in: width, out: width, bias: true)
        self.headCount = headCount
    }

    /// x: [N, D] → [N, D]
    func callAsFunction(_ x: Tensor) -> Tensor {
        let headDim = x.dim(-1) / headCount
        let (queries, keys, values) = Linear.apply(q, k, v, to: x)
        let a = attention(q: queries, k: keys, v: values, heads: headCount, scale: 1 / Float(headDim).squareRoot(), mask: .none)
        return out(a)
    }
}

/// Pre-LN transformer layer: x += attn(ln1(x)); x += fc2(act(fc1(ln2(x)))).
struct VisionEncoderLayer: Sendable {
    let layerNorm1, layerNorm2: LayerNorm
    let selfAttention: VisionAttention
    let fc1, fc2: Linear
    let activation: Activation

    init(_ w: WeightScope, config: VisionTransformerConfig) throws {
        let d = config.hiddenSize
        layerNorm1 = try LayerNorm(w, "layer_norm1", width: d, eps: config.layerNormEps)
        selfAttention = try VisionAttention(w.scope("self_attn"), width: d, headCount: config.headCount)
        layerNorm2 = try LayerNorm(w, "layer_norm2", width: d, eps: config.layerNormEps)
        fc1 = try Linear(w, "mlp.fc1", in: d, out: config.intermediateSize, bias: true)
        fc2 = try Linear(w, "mlp.fc2", in: config.intermediateSize, out: d, bias: true)
        activation = config.activation
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        addScaled(&h, selfAttention(layerNorm1(h)))
        addScaled(&h, fc2(activate(fc1(layerNorm2(h)), activation)))
        return h
    }
}

/// The vision tower: patch embedding (a stride-p convolution without bias, done as one matmul over
/// unfolded patches), class token, position embedding, `pre_layrnorm`, encoder layers. Returns the
/// last layer's hidden states without `post_layernorm`, as IDEFICS feeds them to the LM.
public struct VisionEncoder: Sendable {
    public let config: VisionTransformerConfig
    let patchEmbedding: PatchEmbedding
    let classEmbedding: Tensor
    let positionEmbedding: Tensor
    let preLayerNorm: LayerNorm
    let layers: [VisionEncoderLayer]

    enum Key {
        static let classEmbedding = "embeddings.class_embedding"
        static let patchEmbedding = "embeddings.patch_embedding.weight"
        static let positionEmbedding = "embeddings.position_embedding.weight"
        static let preLayerNorm = "pre_layrnorm"
        static let postLayerNorm = "post_layernorm"
        static let layers = "encoder.layers"
    }

    public init(_ w: WeightScope, config: VisionTransformerConfig) throws {
        self.config = config
        let d = config.hiddenSize
        patchEmbedding = try PatchEmbedding(w, Key.patchEmbedding, width: d, channelCount: config.channelCount,
                                            patchSize: config.patchSize)
        classEmbedding = try w.take(Key.classEmbedding, shape: [d]).toF32()
        positionEmbedding = try w.take(Key.positionEmbedding, shape: [config.tokensPerImage, d]).toF32()
        preLayerNorm = try LayerNorm(w, Key.preLayerNorm, width: d, eps: config.layerNormEps)
        // post_layernorm only feeds CLIP's pooled output, which IDEFICS does not use; it is still
        // checked so a malformed checkpoint is caught.
        _ = try LayerNorm(w, Key.postLayerNorm, width: d, eps: config.layerNormEps)
        layers = try (0..<config.layerCount).map { try VisionEncoderLayer(w.scope(Key.layers, $0), config: config) }
    }

    /// pixels: [3, S, S] normalised → [1 + (S/p)², D]
    public func callAsFunction(_ pixels: Tensor) -> Tensor {
        let s = config.imageSize, c = config.channelCount, g = config.patchesPerSide
        precondition(pixels.shape == [c, s, s], "vision encoder expects [\(c), \(s), \(s)], got \(pixels.shape)")
        let patchEmbeds = patchEmbedding(pixels)
        let d = config.hiddenSize
        var h = Tensor(zeros: [g * g + 1, d])
        h.withMutableFloats { out in
            classEmbedding.withFloats { cls in
                for i in 0..<d { out[i] = cls[i] }
            }
            patchEmbeds.withFloats { pe in
                for i in 0..<(g * g * d) { out[d + i] = pe[i] }
            }
            positionEmbedding.withFloats { pos in
                for i in 0..<out.count { out[i] += pos[i] }
            }
        }
        h = preLayerNorm(h)
        for layer in layers { h = layer(h) }
        return h
    }
}
