import Foundation
import Testing
import FlamingoCore

// Every optimised kernel against a naive twin written for clarity, not speed.

private func randomValues(_ n: Int, seed: UInt64) -> [Float] {
    var state = seed
    return (0..<n).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 2000) / 1000 - 1
    }
}

private func naiveLinear(_ x: [Float], _ w: [Float], t: Int, k: Int, n: Int) -> [Float] {
    var y = [Float](repeating: 0, count: t * n)
    for r in 0..<t { for j in 0..<n { var s: Float = 0; for i in 0..<k { s += x[r * k + i] * w[j * k + i] }; y[r * n + j] = s } }
    return y
}

private func maxDiff(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? 0 }

private func halfTensor(_ values: [Float], shape: [Int], dtype: DType) -> Tensor {
    var t = Tensor(zeros: shape, dtype: dtype)
    t.withUnsafeMutableRawBytes { raw in
        let p = raw.bindMemory(to: UInt16.self)
        for i in values.indices { p[i] = dtype == .bf16 ? floatToBF16(values[i]) : Float16(values[i]).bitPattern }
    }
    return t
}

@Test(arguments: [(1, DType.f32), (5, .f32), (1, .bf16), (2, .bf16), (7, .bf16), (1, .f16), (7, .f16)])
func linearMatchesNaive(t: Int, dtype: DType) {
    let (k, n) = (37, 19)
    let x = randomValues(t * k, seed: 1)
    var w = randomValues(n * k, seed: 2)
    let weight: Tensor
    if dtype == .f32 {
        weight = Tensor(w, shape: [n, k])
    } else {
        weight = halfTensor(w, shape: [n, k], dtype: dtype)
        w = weight.scalars  // compare against the rounded weights the kernel really sees
    }
    let y = linear(Tensor(x, shape: [t, k]), weight: weight).scalars
    // bf16 weights see their activations rounded to bf16 (DESIGN.md "Numerics").
    let seen = dtype == .bf16 ? x.map { bf16ToFloat(floatToBF16($0)) } : x
    #expect(maxDiff(y, naiveLinear(seen, w, t: t, k: k, n: n)) < 1e-4)
}

@Test func linearAddsBias() {
    let x = randomValues(3 * 4, seed: 3), w = randomValues(2 * 4, seed: 4)
    let y = linear(Tensor(x, shape: [3, 4]), weight: Tensor(w, shape: [2, 4]), bias: Tensor([10, 20], shape: [2])).scalars
    let expected = naiveLinear(x, w, t: 3, k: 4, n: 2).enumerated().map { $0.element + ($0.offset % 2 == 0 ? 10 : 20) }
    #expect(maxDiff(y, expected) < 1e-5)
}

@Test(arguments: [AttentionMask.none, .causal(offset: 0), .causal(offset: 3)])
func attentionMatchesNaive(mask: AttentionMask) {
    let (heads, d, t) = (3, 4, 5)
    let s = { if case .causal(let o) = mask { return o + t }; return 6 }()
    let q = randomValues(t * heads * d, seed: 5), k = randomValues(s * heads * d, seed: 6), v = randomValues(s * heads * d, seed: 7)
    let scale: Float = 0.5
    let out = attention(q: Tensor(q, shape: [t, heads * d]), k: Tensor(k, shape: [s, heads * d]),
                        v: Tensor(v, shape: [s, heads * d]), heads: heads, scale: scale, mask: mask).scalars
    var expected = [Float](repeating: 0, count: t * heads * d)
    for h in 0..<heads {
        for i in 0..<t {
            let visible = { if case .causal(let o) = mask { return o + i + 1 }; return s }()
            let w = heads * d
            var scores = [Float](repeating: 0, count: visible)
            for j in 0..<visible {
                var dot: Float = 0
                for e in 0..<d { dot += q[i * w + h * d + e] * k[j * w + h * d + e] }
                scores[j] = dot * scale
            }
            let m = scores.max()!
            scores = scores.map { exp($0 - m) }
            let z = scores.reduce(0, +)
            for e in 0..<d {
                var acc: Float = 0
                for j in 0..<visible { acc += scores[j] / z * v[j * w + h * d + e] }
                expected[i * w + h * d + e] = acc
            }
        }
    }
    #expect(maxDiff(out, expected) < 1e-5)
}

@Test func normsMatchNaive() {
    let x = randomValues(3 * 8, seed: 8), w = randomValues(8, seed: 9), b = randomValues(8, seed: 10)
    let rms = rmsNorm(Tensor(x, shape: [3, 8]), weight: Tensor(w, shape: [8]), eps: 1e-6).scalars
    let ln = layerNorm(Tensor(x, shape: [3, 8]), weight: Tensor(w, shape: [8]), bias: Tensor(b, shape: [8]), eps: 1e-5).scalars
    var rmsExpected: [Float] = [], lnExpected: [Float] = []
    for r in 0..<3 {
        let row = Array(x[(r * 8)..<(r * 8 + 8)])
        let ms = row.map { $0 * $0 }.reduce(0, +) / 8
        rmsExpected += row.enumerated().map { w[$0.offset] * $0.element / (ms + 1e-6).squareRoot() }
        let mean = row.reduce(0, +) / 8
        let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 8
        lnExpected += row.enumerated().map { ($0.element - mean) / (variance + 1e-5).squareRoot() * w[$0.offset] + b[$0.offset] }
    }
    #expect(maxDiff(rms, rmsExpected) < 1e-5)
    #expect(maxDiff(ln, lnExpected) < 1e-5)
}

@Test func ropeRotatesHalves() {
    let d = 8
    let x = randomValues(2 * 2 * d, seed: 11)
    var t = Tensor(x, shape: [2, 2 * d])
    RotaryEmbedding(headDim: d, base: 10000).apply(&t, positions: [0, 5])
    let y = t.scalars
    #expect(maxDiff(Array(y[0..<(2 * d)]), Array(x[0..<(2 * d)])) < 1e-7)  // position 0 is the identity
    for h in 0..<2 {
        for i in 0..<(d / 2) {
            let angle = 5 * pow(10000, -Float(2 * i) / Float(d))
            let base = 2 * d + h * d
            let (x1, x2) = (x[base + i], x[base + i + d / 2])
            #expect(abs(y[base + i] - (x1 * cos(angle) - x2 * sin(angle))) < 1e-5)
            #expect(abs(y[base + i + d / 2] - (x2 * cos(angle) + x1 * sin(angle))) < 1e-5)
        }
    }
}

@Test func activationsMatchDefinitions() {
    for x: Float in [-3, -0.5, 0, 0.7, 2.5] {
        let silu: Float = x / (1 + exp(-x))
        let gelu: Float = 0.5 * x * (1 + erf(x / Float(2).squareRoot()))
        let relu: Float = max(0, x)
        #expect(abs(Activation.silu.apply(x) - silu) < 1e-6)
        #expect(abs(Activation.gelu.apply(x) - gelu) < 1e-6)
        #expect(Activation.relu.apply(x) == relu)
        #expect(Activation.squaredRelu.apply(x) == relu * relu)
    }
}

@Test func npyRoundTrip() throws {
    let t = Tensor(randomValues(12, seed: 12), shape: [3, 4])
    let back = try NPY.decode(NPY.encode(t))
    #expect(back.shape == [3, 4])
    #expect(back.scalars == t.scalars)
    #expect(throws: (any Error).self) { try NPY.decode(Data("not numpy".utf8)) }
}

@Test func parallelForCoversEveryIndexOnce() {
    ComputeThreads.configure(2)
    var hits = [Int](repeating: 0, count: 1000)
    hits.withUnsafeMutableBufferPointer { h in
        parallelFor(1000) { r in for i in r { h[i] += 1 } }
    }
    #expect(hits.allSatisfy { $0 == 1 })
}
