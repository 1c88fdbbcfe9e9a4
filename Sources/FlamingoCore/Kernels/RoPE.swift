import Foundation

/// How a RoPE's frequencies are stretched for contexts longer than training's
/// (transformers `modeling_rope_utils`, `ROPE_INIT_FUNCTIONS`).
public enum RoPEScaling: Sendable, Equatable {
    /// inv_freq as computed.
    case none
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    case linear(factor: Float)
    /// `llama3` (`_compute_llama3_parameters`): wavelengths shorter than
    /// originalMaxPositions / highFrequencyFactor keep their frequency, longer than
    /// originalMaxPositions / lowFrequencyFactor are divided by `factor`, and the band between
    /// blends the two.
    case llama3(factor: Float, lowFrequencyFactor: Float, highFrequencyFactor: Float, originalMaxPositions: Int)

    /// Scaled inverse frequencies.
    func apply(_ inverseFrequencies: [Float]) -> [Float] {
        switch self {
        case .none:
            return inverseFrequencies
        case .linear(let factor):
            return inverseFrequencies.map { $0 / factor }
        case .llama3(let factor, let low, let high, let original):
            let lowWavelength = Float(original) / low, highWavelength = Float(original) / high
            return inverseFrequencies.map { f in
                let wavelength = 2 * Float.pi / f
                if wavelength < highWavelength { return f }
                if wavelength > lowWavelength { return f / factor }
                let smooth = (Float(original) / wavelength - low) / (high - low)
                return (1 - smooth) * f / factor + smooth * f
            }
        }
    }
}

/// Rotary position embedding in the "rotate half" layout of LLaMA in transformers: dimension i pairs
/// with i + d/2, and frequency i is base^(-2i/d), optionally scaled.
public struct RotaryEmbedding: Sendable {
    public let headDim: Int
    /// inv_freq[i] = 1 / base^(2i/d), computed in f32 as transformers does, then scaled.
    public let inverseFrequencies: [Float]

    public init(headDim: Int, base: Float, scaling: RoPEScaling = .none) {
        precondition(headDim % 2 == 0, "rotary head_dim must be even")
        self.headDim = headDim
        self.inverseFrequencies = scaling.apply((0..<(headDim / 2)).map { i in
            1 / pow(base, Float(2 * i) / Float(headDim))
        })
    }

    /// Rotates the heads of `x` [T, heads·headDim] in place; row r is at position `positions[r]`.
    public func apply(_ x: inout Tensor, positions: [Int]) {
        let width = x.dim(-1)
        let rows = x.count / width
        precondition(rows == positions.count && width % headDim == 0, "rope: \(x.shape) for \(positions.count) positions")
        rotate(&x, rows: 0..<rows) { positions[$0] }
    }

    /// Rotates rows `rows` of `x` [T, heads·headDim] in place: consecutive positions from
    /// `firstPosition` (one sequence's next tokens; no positions array per call).
    public func apply(_ x: inout Tensor, rows: Range<Int>, firstPosition: Int) {
        let width = x.dim(-1)
        precondition(rows.lowerBound >= 0 && rows.upperBound <= x.count / width && width % headDim == 0,
                     "rope: rows \(rows) of \(x.shape)")
        rotate(&x, rows: rows) { firstPosition + ($0 - rows.lowerBound) }
    }

    @inline(__always)
    private func rotate(_ x: inout Tensor, rows: Range<Int>, position: (Int) -> Int) {
        let width = x.dim(-1)
        let half = headDim / 2
        x.withMutableFloats { v in
            // cos and sin of one row's angles, on the stack (no heap allocation per call).
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * max(half, 1)) { table in
                let cosines = table.baseAddress!, sines = table.baseAddress! + half
                for r in rows {
                    let p = Float(position(r))
                    for i in 0..<half {
                        let angle = p * inverseFrequencies[i]
                        cosines[i] = cos(angle)
                        sines[i] = sin(angle)
                    }
                    var h = 0
                    while h < width {
                        let base = v.baseAddress! + r * width + h
                        for i in 0..<half {
                            let x1 = base[i], x2 = base[i + half]
                            base[i] = x1 * cosines[i] - x2 * sines[i]
                            base[i + half] = x2 * cosines[i] + x1 * sines[i]
                        }
                        h += headDim
                    }
                }
            }
        }
    }
}
