import Foundation

// Legend: x is [T, C]; normalisation runs over the last dimension C.

/// RMSNorm (T5/LLaMA): y = w · x / sqrt(mean(x²) + eps). `weight` [C] of any dtype.
public func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float) -> Tensor {
    let c = x.dim(-1)
    precondition(weight.count == c, "rmsNorm: weight \(weight.shape) for width \(c)")
    let w = weight.toF32()
    var y = x
    y.withMutableFloats { out in
        w.withFloats { wp in
            let rows = out.count / max(c, 1)
            parallelFor(rows, minChunk: 16) { r in
                for row in r { rmsNormRow(out.baseAddress! + row * c, wp.baseAddress!, c, eps) }
            }
        }
    }
    return y
}

/// In-place RMSNorm of one row of `c` floats.
@inline(__always)
public func rmsNormRow(_ v: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ c: Int, _ eps: Float) {
    var ss: Float = 0
    for i in 0..<c { ss += v[i] * v[i] }
    let scale = 1 / (ss / Float(c) + eps).squareRoot()
    for i in 0..<c { v[i] = w[i] * (v[i] * scale) }
}

/// LayerNorm: y = (x - mean) / sqrt(var + eps) · w + b (biased variance, as PyTorch).
public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor?, eps: Float) -> Tensor {
    let c = x.dim(-1)
    precondition(weight.count == c, "layerNorm: weight \(weight.shape) for width \(c)")
    let w = weight.toF32()
    let b = bias?.toF32()
    var y = x
    y.withMutableFloats { out in
        w.withFloats { wp in
            let rows = out.count / max(c, 1)
            parallelFor(rows, minChunk: 16) { r in
                for row in r {
                    if let b {
                        b.withFloats { bp in layerNormRow(out.baseAddress! + row * c, wp.baseAddress!, bp.baseAddress!, c, eps) }
                    } else {
                        layerNormRow(out.baseAddress! + row * c, wp.baseAddress!, nil, c, eps)
                    }
                }
            }
        }
    }
    return y
}

@inline(__always)
public func layerNormRow(_ v: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>?, _ c: Int, _ eps: Float) {
    var mean: Float = 0
    for i in 0..<c { mean += v[i] }
    mean /= Float(c)
    var variance: Float = 0
    for i in 0..<c { let d = v[i] - mean; variance += d * d }
    variance /= Float(c)
    let scale = 1 / (variance + eps).squareRoot()
    if let b {
        for i in 0..<c { v[i] = (v[i] - mean) * scale * w[i] + b[i] }
    } else {
        for i in 0..<c { v[i] = (v[i] - mean) * scale * w[i] }
    }
}
