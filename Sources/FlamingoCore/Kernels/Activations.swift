import Foundation

/// Elementwise activations used by Flamingo-family models.
public enum Activation: String, Sendable, Codable {
    /// Exact GELU, x·Φ(x) with erf (PyTorch's default, CLIP ViT in IDEFICS).
    case gelu
    /// tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    case geluTanh = "gelu_pytorch_tanh"
    /// x·σ(1.702x), OpenAI CLIP.
    case quickGelu = "quick_gelu"
    /// x·σ(x); with a gate it forms SwiGLU (LLaMA).
    case silu
    case relu
    /// relu(x)², the paper's Chinchilla-style FFW variant.
    case squaredRelu = "relu2"

    /// Parses a Hugging Face `hidden_act` string.
    public init?(huggingFace name: String) {
        switch name {
        case "gelu": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": self = .geluTanh
        case "quick_gelu": self = .quickGelu
        case "silu", "swish": self = .silu
        case "relu": self = .relu
        case "relu2", "squared_relu": self = .squaredRelu
        default: return nil
        }
    }

    /// The `hidden_act` name transformers uses.
    public var huggingFaceName: String {
        switch self {
        case .gelu: "gelu"
        case .geluTanh: "gelu_pytorch_tanh"
        case .quickGelu: "quick_gelu"
        case .silu: "silu"
        case .relu: "relu"
        case .squaredRelu: "relu2"
        }
    }

    @inline(__always)
    public func apply(_ x: Float) -> Float {
        switch self {
        case .gelu: return 0.5 * x * (1 + erf(x * 0.70710678118654752))
        case .geluTanh:
            let inner: Float = 0.7978845608028654 * (x + 0.044715 * x * x * x)
            return 0.5 * x * (1 + tanh(inner))
        case .quickGelu: return x / (1 + exp(-1.702 * x))
        case .silu: return x / (1 + exp(-x))
        case .relu: return max(x, 0)
        case .squaredRelu: let r = max(x, 0); return r * r
        }
    }
}

/// y = act(x), elementwise.
public func activate(_ x: Tensor, _ act: Activation) -> Tensor {
    var y = x
    y.withMutableFloats { v in
        parallelFor(v.count, minChunk: 4096) { r in
            for i in r { v[i] = act.apply(v[i]) }
        }
    }
    return y
}

/// y = act(gate) · up, elementwise (SwiGLU when act is SiLU).
public func gatedActivate(gate: Tensor, up: Tensor, _ act: Activation) -> Tensor {
    precondition(gate.shape == up.shape, "gatedActivate: \(gate.shape) vs \(up.shape)")
    var y = gate
    y.withMutableFloats { g in
        up.withFloats { u in
            parallelFor(g.count, minChunk: 4096) { r in
                for i in r { g[i] = act.apply(g[i]) * u[i] }
            }
        }
    }
    return y
}

/// a += scale · b, elementwise (residual connections with gates).
public func addScaled(_ a: inout Tensor, _ b: Tensor, scale: Float = 1) {
    precondition(a.count == b.count, "addScaled: \(a.shape) vs \(b.shape)")
    a.withMutableFloats { av in
        b.withFloats { bv in
            for i in 0..<av.count { av[i] += scale * bv[i] }
        }
    }
}

/// Numerically stable in-place softmax of one row.
@inline(__always)
public func softmaxRow(_ v: UnsafeMutablePointer<Float>, _ n: Int) {
    var m = -Float.infinity
    for i in 0..<n { m = max(m, v[i]) }
    var s: Float = 0
    for i in 0..<n { let e = exp(v[i] - m); v[i] = e; s += e }
    let inv = 1 / s
    for i in 0..<n { v[i] *= inv }
}
