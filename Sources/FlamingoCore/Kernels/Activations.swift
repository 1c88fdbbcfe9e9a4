import CKernels
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

    /// The activation's code in the C kernels (FK_ACT_*).
    var kernelCode: Int32 {
        switch self {
        case .gelu: Int32(FK_ACT_GELU)
        case .geluTanh: Int32(FK_ACT_GELU_TANH)
        case .quickGelu: Int32(FK_ACT_QUICK_GELU)
        case .silu: Int32(FK_ACT_SILU)
        case .relu: Int32(FK_ACT_RELU)
        case .squaredRelu: Int32(FK_ACT_RELU2)
        }
    }
}

/// y = act(x), elementwise, through the kernel table's vector code (`apply` is its scalar
/// definition). Chunks over the compute threads; elementwise, so the split changes nothing.
public func activate(_ x: Tensor, _ act: Activation, kernels: KernelTable = .active) -> Tensor {
    var y = x
    let code = act.kernelCode
    y.withMutableFloats { v in
        let p = UncheckedSendable(v.baseAddress!)
        parallelFor(v.count, minChunk: 1 << 14) { r in kernels.f32.activate(p.value + r.lowerBound, nil, r.count, code) }
    }
    return y
}

/// y = act(gate) · up, elementwise (SwiGLU when act is SiLU).
public func gatedActivate(gate: Tensor, up: Tensor, _ act: Activation, kernels: KernelTable = .active) -> Tensor {
    precondition(gate.shape == up.shape, "gatedActivate: \(gate.shape) vs \(up.shape)")
    var y = gate
    let code = act.kernelCode
    y.withMutableFloats { g in
        up.withFloats { u in
            let (gp, up) = (UncheckedSendable(g.baseAddress!), UncheckedSendable(u.baseAddress!))
            parallelFor(g.count, minChunk: 1 << 14) { r in kernels.f32.activate(gp.value + r.lowerBound, up.value + r.lowerBound, r.count, code) }
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
