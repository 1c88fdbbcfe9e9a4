import FlamingoCore

/// y = x·Wᵀ (+ b), W [out, in] in its stored format (f32, f16, bf16 or int8 blocks).
public struct Linear: Sendable {
    public let weight: WeightMatrix
    public let bias: Tensor?

    public var inFeatures: Int { weight.columns }
    public var outFeatures: Int { weight.rows }

    /// Reads `<key>.weight` (and `<key>.bias` when `bias`) from `w`.
    public init(_ w: WeightScope, _ key: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = false) throws {
        weight = try w.takeMatrix(key + ".weight", rows: outFeatures, columns: inFeatures)
        self.bias = bias ? try w.take(key + ".bias", shape: [outFeatures]) : nil
    }

    /// This tensor-parallel rank's share of `<key>.weight` when `w` is sharded (whole otherwise):
    /// its rows for `.outputs`, its columns for `.inputs` (no bias: a split layer's bias would be
    /// added once per rank).
    init(_ w: WeightScope, _ key: String, in inFeatures: Int, out outFeatures: Int, split: TensorSplit) throws {
        let whole = try w.takeMatrix(key + ".weight", rows: outFeatures, columns: inFeatures)
        bias = nil
        guard let shard = w.shard, shard.count > 1 else {
            weight = whole
            return
        }
        let total = split == .outputs ? outFeatures : inFeatures
        guard total % shard.count == 0 else {
            throw ModelLoadError.tensorParallel(name: w.prefix + key, reason: "\(total) \(split == .outputs ? "outputs" : "inputs") do not split over \(shard.count) ranks")
        }
        weight = split == .outputs ? whole.rows(shard.share(total)) : try whole.columns(shard.share(total))
        w.store.keepShare(of: w.prefix + key + ".weight", bytes: weight.byteCount, parameters: weight.rows * weight.columns)
    }

    /// A bias-free layer over an existing weight (tied embeddings).
    init(weight: Tensor) {
        self.weight = WeightMatrix(weight)
        self.bias = nil
    }

    /// x: [T, in] → [T, out]
    public func callAsFunction(_ x: Tensor) -> Tensor {
        linear(x, weight: weight, bias: bias)
    }

    /// Bytes of weights this layer maps.
    public var weightBytes: Int { weight.byteCount + (bias?.byteCount ?? 0) }
    /// What applying it to one token streams and multiplies.
    public var traffic: WeightTraffic { WeightTraffic(bytes: weightBytes, multiplyAdds: weight.rows * weight.columns) }

    /// (a, b) applied to the same x: [T, in] → ([T, out_a], [T, out_b]), in one pass over their
    /// weights when they share a format (gate/up, K/V: one activation rounding and one fan-out over
    /// the compute threads instead of one per layer); the same values as calling each.
    public static func apply(_ a: Linear, _ b: Linear, to x: Tensor) -> (Tensor, Tensor) {
        guard a.weight.format == b.weight.format else { return (a(x), b(x)) }
        return linear(x, a.weight, b.weight, biases: (a.bias, b.bias))
    }

    /// (a, b, c) applied to the same x (Q/K/V); see `apply(_:_:to:)`.
    public static func apply(_ a: Linear, _ b: Linear, _ c: Linear, to x: Tensor) -> (Tensor, Tensor, Tensor) {
        guard a.weight.format == b.weight.format, a.weight.format == c.weight.format else { return (a(x), b(x), c(x)) }
        return linear(x, a.weight, b.weight, c.weight, biases: (a.bias, b.bias, c.bias))
    }
}

/// RMSNorm with a learned scale (LLaMA; IDEFICS's q/k norms).
public struct RMSNorm: Sendable {
    public let weight: Tensor
    public let eps: Float

    public init(_ w: WeightScope, _ key: String, width: Int, eps: Float) throws {
        weight = try w.take(key + ".weight", shape: [width]).toF32()
        self.eps = eps
    }

    /// x: [T, C] → [T, C]
    public func callAsFunction(_ x: Tensor) -> Tensor { rmsNorm(x, weight: weight, eps: eps) }

    /// Normalises each `weight.count`-wide slice of every row in place (per-head q/k norms).
    public func applyPerSlice(_ x: inout Tensor) {
        let c = weight.count
        let eps = eps
        x.withMutableFloats { v in
            weight.withFloats { w in
                for s in 0..<(v.count / c) { rmsNormRow(v.baseAddress! + s * c, w.baseAddress!, c, eps) }
            }
        }
    }
}

/// LayerNorm with weight and bias (CLIP, Perceiver Resampler).
public struct LayerNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float

    public init(_ w: WeightScope, _ key: String, width: Int, eps: Float) throws {
        weight = try w.take(key + ".weight", shape: [width]).toF32()
        bias = try w.take(key + ".bias", shape: [width]).toF32()
        self.eps = eps
    }

    /// x: [T, C] → [T, C]
    public func callAsFunction(_ x: Tensor) -> Tensor { layerNorm(x, weight: weight, bias: bias, eps: eps) }

    /// Normalises each `weight.count`-wide slice of every row in place (per-head q/k norms).
    public func applyPerSlice(_ x: inout Tensor) {
        let c = weight.count
        let eps = eps
        x.withMutableFloats { v in
            weight.withFloats { w in
                bias.withFloats { b in
                    for s in 0..<(v.count / c) { layerNormRow(v.baseAddress! + s * c, w.baseAddress!, b.baseAddress!, c, eps) }
                }
            }
        }
    }
}
