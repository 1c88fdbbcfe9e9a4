import Foundation
import Testing
import CKernels

// The q8 members of every kernel family the CPU can run (portable always; avx2, avx512, avx512_vnni
// when /proc/cpuinfo lists their instructions) against the naive twins, plus the one weight quantizer
// fk_quantize_weight_row_q8. Heavy reference work (double-accumulated dots, magnitudes) runs in the
// naive C kernels, so this suite stays fast in debug builds too.

// MARK: - Families

// MARK: - Buffers

private func randomValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = Rng(state: seed)
    return (0..<count).map { _ in rng.next() * scale }
}

/// Quantized activation rows (the fk_q8_rows layout), owned.
private final class Q8Activations {
    let t: Int, k: Int, blocks: Int
    let q: UnsafeMutablePointer<Int8>
    let scale: UnsafeMutablePointer<Float>
    let sum: UnsafeMutablePointer<Int32>

    init(t: Int, k: Int) {
        self.t = t
        self.k = k
        blocks = fk_q8_blocks(k)
        q = .allocate(capacity: t * blocks * 32)
        q.initialize(repeating: 0x5A, count: t * blocks * 32)  // padding must be written, not assumed
        scale = .allocate(capacity: t * blocks)
        scale.initialize(repeating: .nan, count: t * blocks)
        sum = .allocate(capacity: t * blocks)
        sum.initialize(repeating: 0x5A5A, count: t * blocks)
    }

    /// Quantizes t rows of x (row stride ldx) with `quantize`.
    convenience init(_ x: [Float], ldx: Int, t: Int, k: Int, with table: fk_kernels) {
        self.init(t: t, k: k)
        x.withUnsafeBufferPointer { table.quantize_rows_q8(rows(), $0.baseAddress, ldx, t, k) }
    }

    deinit {
        q.deallocate()
        scale.deallocate()
        sum.deallocate()
    }

    /// Rows from `first` on.
    func rows(from first: Int = 0) -> fk_q8_rows {
        fk_q8_rows(q: q + first * blocks * 32, scale: scale + first * blocks, sum: sum + first * blocks)
    }

    /// |q| with the same scales: the naive matmul of two of these is sum |x||w|, dequantized.
    func absolute() -> Q8Activations {
        let a = Q8Activations(t: t, k: k)
        for e in 0..<(t * blocks * 32) { a.q[e] = q[e] < 0 ? -q[e] : q[e] }
        for b in 0..<(t * blocks) { a.scale[b] = scale[b]; a.sum[b] = 0 }
        return a
    }

    func dequantized(_ i: Int, _ e: Int) -> Double { Double(q[(i * blocks) * 32 + e]) * Double(scale[i * blocks + e / 32]) }
}

/// q8 weights quantized by fk_quantize_weight_row_q8, owned.
private final class Q8Weights {
    let n: Int, k: Int, blocks: Int
    var q: [Int8]
    var scale: [UInt16]

    init(n: Int, k: Int) {
        self.n = n
        self.k = k
        blocks = fk_q8_blocks(k)
        q = [Int8](repeating: 0, count: n * k)
        scale = [UInt16](repeating: 0, count: n * blocks)
    }

    convenience init(_ w: [Float], n: Int, k: Int) {
        self.init(n: n, k: k)
        for j in 0..<n {
            let status = q.withUnsafeMutableBufferPointer { qp in
                scale.withUnsafeMutableBufferPointer { sp in
                    w.withUnsafeBufferPointer { fk_quantize_weight_row_q8(qp.baseAddress! + j * k, sp.baseAddress! + j * blocks, $0.baseAddress! + j * k, k) }
                }
            }
            precondition(status == 0)
        }
    }

    func absolute() -> Q8Weights {
        let a = Q8Weights(n: n, k: k)
        a.q = q.map { $0 < 0 ? -$0 : $0 }
        a.scale = scale
        return a
    }

    func dequantized(_ j: Int, _ e: Int) -> Double { Double(q[j * k + e]) * Double(fk_f16_to_f32(scale[j * blocks + e / 32])) }
}

/// out[t, ldo] = x · wᵀ with `table`'s q8 matmul, x rows from `firstX` on, weight rows from `firstRow`
/// on; columns >= n keep -777.
private func matmul(_ table: fk_kernels, _ x: Q8Activations, firstX: Int = 0, _ w: Q8Weights, firstRow: Int = 0,
                    t: Int, n: Int, ldo: Int) -> [Float] {
    var out = [Float](repeating: -777, count: t * ldo)
    withExtendedLifetime(x) {
        out.withUnsafeMutableBufferPointer { o in
            w.q.withUnsafeBufferPointer { q in
                w.scale.withUnsafeBufferPointer { s in
                    table.matmul_q8(o.baseAddress, ldo, x.rows(from: firstX), q.baseAddress! + firstRow * w.k,
                                    s.baseAddress! + firstRow * w.blocks, t, n, w.k)
                }
            }
        }
    }
    return out
}

private func sameBits(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

// MARK: - quantize_rows_q8

@Test func q8QuantizeRowsMatchNaive() {
    for family in runnableKernelFamilies("Q8KernelVariantTests." + "quantizeRows", special: .vnni) {
        for k in [1, 7, 31, 32, 33, 100, 513, 2048] {
            let t = 4, ldx = k + 3
            var x = randomValues(t * ldx, seed: UInt64(k), scale: 3)
            for e in 0..<k { x[ldx + e] = 0 }                              // an all-zero row
            for e in 0..<k { x[2 * ldx + e] = e % 32 == 5 ? 1000 : x[2 * ldx + e] * 1e-3 }  // one large value per block
            let mine = Q8Activations(x, ldx: ldx, t: t, k: k, with: family.table)
            let naive = Q8Activations(x, ldx: ldx, t: t, k: k, with: fk_naive)
            var scaleUlps = 0, qDiff = 0, sumsWrong = 0, padWrong = 0
            for b in 0..<(t * mine.blocks) {
                let s0 = mine.scale[b].bitPattern, s1 = naive.scale[b].bitPattern
                scaleUlps = max(scaleUlps, Int(s0 > s1 ? s0 - s1 : s1 - s0))
                var s: Int32 = 0
                for e in 0..<32 {
                    let v = mine.q[b * 32 + e]
                    s += Int32(v)
                    qDiff = max(qDiff, abs(Int(v) - Int(naive.q[b * 32 + e])))
                    if (b % mine.blocks) * 32 + e >= k && v != 0 { padWrong += 1 }
                    if v == -128 { qDiff = 99 }
                }
                if s != mine.sum[b] { sumsWrong += 1 }
            }
            #expect(scaleUlps <= 1, "\(family.name) k=\(k): scale differs by \(scaleUlps) ulp")
            #expect(qDiff <= 1, "\(family.name) k=\(k): |Δq| = \(qDiff)")
            #expect(sumsWrong == 0, "\(family.name) k=\(k): \(sumsWrong) block sums disagree with q")
            #expect(padWrong == 0, "\(family.name) k=\(k): \(padWrong) padding values not zero")
            for b in 0..<mine.blocks { #expect(mine.scale[mine.blocks + b] == 0 && mine.sum[mine.blocks + b] == 0) }
        }
    }
}

// MARK: - matmul_q8

@Test func q8MatmulMatchesNaive() {
    let families = runnableKernelFamilies("Q8KernelVariantTests." + "matmul", special: .vnni)
    var worst = [Double](repeating: 0, count: families.count)
    for k in [1, 7, 31, 32, 33, 100, 513, 2048] {
        let blocks = fk_q8_blocks(k)
        // f32 accumulation: per lane at most `blocks` fused steps, then the fixed 4-level tree,
        // plus the rounding of wscale * xscale; relative to sum |x||w| (dequantized).
        let tolerance = Double(blocks + 8) * Double(Float.ulpOfOne)
        for n in [1, 5, 17, 130] {
            let w = Q8Weights(randomValues(n * k, seed: UInt64(7 * k + n)), n: n, k: k)
            let wAbs = w.absolute()
            for t in [1, 2, 3, 5, 9, 64] {
                let ldx = k + 1, ldo = n + 3
                var x = randomValues(t * ldx, seed: UInt64(k * 1000 + t), scale: 2)
                if t > 1 { for e in 0..<k { x[ldx + e] = 0 } }
                let xq = Q8Activations(x, ldx: ldx, t: t, k: k, with: fk_naive)
                let reference = matmul(fk_naive, xq, w, t: t, n: n, ldo: ldo)
                let magnitude = matmul(fk_naive, xq.absolute(), wAbs, t: t, n: n, ldo: ldo)
                for (f, family) in families.enumerated() {
                    let out = matmul(family.table, xq, w, t: t, n: n, ldo: ldo)
                    var bad = 0, untouched = true
                    for i in 0..<t {
                        for j in 0..<n {
                            let e = i * ldo + j
                            let err = abs(Double(out[e]) - Double(reference[e]))
                            let rel = magnitude[e] > 0 ? err / Double(magnitude[e]) : (err == 0 ? 0 : .infinity)
                            worst[f] = max(worst[f], rel)
                            if !(rel <= tolerance) { bad += 1 }
                        }
                        for j in n..<ldo where out[i * ldo + j] != -777 { untouched = false }
                    }
                    #expect(bad == 0, "\(family.name) t=\(t) n=\(n) k=\(k): \(bad) outputs beyond \(tolerance) relative")
                    #expect(untouched, "\(family.name) t=\(t) n=\(n) k=\(k): wrote columns >= n")
                }
            }
        }
    }
    for (f, family) in families.enumerated() {
        print("Q8KernelVariantTests: \(family.name) matmul_q8 max relative error \(worst[f]) (of sum |x||w|)")
    }
}

@Test func q8MatmulIsBatchInvariant() {
    for family in runnableKernelFamilies("Q8KernelVariantTests." + "batchInvariance", special: .vnni) {
        for k in [100, 513, 2048] {  // tails: 2 blocks, 1 short block, none
            let (t, n) = (9, 37)
            let w = Q8Weights(randomValues(n * k, seed: UInt64(k + 1)), n: n, k: k)
            let xq = Q8Activations(randomValues(t * k, seed: UInt64(k + 2)), ldx: k, t: t, k: k, with: family.table)
            let ldo = n + 2
            let full = matmul(family.table, xq, w, t: t, n: n, ldo: ldo)
            for i in 0..<t {
                let alone = matmul(family.table, xq, firstX: i, w, t: 1, n: n, ldo: n)
                #expect(sameBits(alone[0..<n], full[(i * ldo)..<(i * ldo + n)]), "\(family.name) k=\(k): row \(i) alone differs from T=9")
            }
            for first in 1...3 {  // other row positions in the register tiles, other T
                let rest = matmul(family.table, xq, firstX: first, w, t: t - first, n: n, ldo: n + 7)
                for i in first..<t {
                    let r = (i - first) * (n + 7)
                    #expect(sameBits(rest[r..<(r + n)], full[(i * ldo)..<(i * ldo + n)]), "\(family.name) k=\(k): row \(i) at tile offset \(first) differs")
                }
            }
            for firstRow in [1, 2, 3, 5] {  // other weight-row positions in the tiles, other N
                let part = matmul(family.table, xq, w, firstRow: firstRow, t: t, n: n - firstRow, ldo: ldo)
                for i in 0..<t {
                    let a = part[(i * ldo)..<(i * ldo + n - firstRow)], b = full[(i * ldo + firstRow)..<(i * ldo + n)]
                    #expect(sameBits(a, b), "\(family.name) k=\(k): weight rows from \(firstRow) differ")
                }
            }
        }
    }
}

/// The x86 families share one lane layout and float sequence (avx512_q8.c: vpmaddubsw or vpdpbusd put
/// the same exact integers in every lane, then the same f32 steps), so their q8 matmuls agree bit for
/// bit: a q8 model gives the same logits on AVX2 and AVX-512 machines.
@Test func q8X86FamiliesAgreeBitwise() {
    let families = runnableKernelFamilies("Q8KernelVariantTests." + "x86Bitwise", special: .vnni).filter { $0.name != "portable" }
    guard let first = families.first else { return }
    for k in [33, 100, 513, 2048] {
        let (t, n) = (5, 19)
        let w = Q8Weights(randomValues(n * k, seed: UInt64(k + 3)), n: n, k: k)
        let xq = Q8Activations(randomValues(t * k, seed: UInt64(k + 4)), ldx: k, t: t, k: k, with: first.table)
        let reference = matmul(first.table, xq, w, t: t, n: n, ldo: n)
        for family in families.dropFirst() {
            let out = matmul(family.table, xq, w, t: t, n: n, ldo: n)
            #expect(sameBits(out[...], reference[...]), "\(family.name) vs \(first.name), k=\(k)")
        }
    }
}

// MARK: - fk_quantize_weight_row_q8

@Test func q8WeightQuantizerRoundTrips() {
    for k in [1, 7, 31, 32, 33, 100, 513] {
        let blocks = fk_q8_blocks(k)
        for magnitude: Float in [0.01, 1, 1000] {  // scales stay normal f16 numbers
            let w = randomValues(k, seed: UInt64(k) &+ UInt64(magnitude * 100), scale: magnitude)
            var q = [Int8](repeating: 99, count: k), scale = [UInt16](repeating: 0xFFFF, count: blocks)
            #expect(fk_quantize_weight_row_q8(&q, &scale, w, k) == 0)
            for b in 0..<blocks {
                let lo = b * 32, hi = min(lo + 32, k)
                let amax = w[lo..<hi].map { abs($0) }.max()!
                let d = fk_f16_to_f32(scale[b])
                #expect(scale[b] == fk_f32_to_f16(amax / 127), "k=\(k) block \(b): scale from its own \(hi - lo) values")
                for e in lo..<hi {
                    #expect(abs(Int(q[e])) <= 127)
                    let err = abs(Float(q[e]) * d - w[e])
                    #expect(err <= d / 2 * (1 + 1e-6) + abs(w[e]) * Float.ulpOfOne, "k=\(k) e=\(e): |q*scale - w| = \(err), scale \(d)")
                }
            }
        }
        // zero row: zero scales, zero values
        var q = [Int8](repeating: 99, count: k), scale = [UInt16](repeating: 0xFFFF, count: blocks)
        #expect(fk_quantize_weight_row_q8(&q, &scale, [Float](repeating: 0, count: k), k) == 0)
        #expect(q.allSatisfy { $0 == 0 } && scale.allSatisfy { $0 == 0 })
        // a short last block gets its own scale: zeros everywhere but there
        if k % 32 != 0 && k > 32 {
            var w = [Float](repeating: 0, count: k)
            w[k - 1] = -0.5
            #expect(fk_quantize_weight_row_q8(&q, &scale, w, k) == 0)
            #expect(scale[blocks - 1] == fk_f32_to_f16(0.5 / 127) && scale[..<(blocks - 1)].allSatisfy { $0 == 0 })
            #expect(q[k - 1] == -127)
        }
        // non-finite input, and a scale that overflows f16, are refused
        for bad: Float in [.nan, .infinity, -.infinity, 1e7] {
            for position in Set([0, k / 2, k - 1]) {
                var w = randomValues(k, seed: 5)
                w[position] = bad
                #expect(fk_quantize_weight_row_q8(&q, &scale, w, k) == -1, "k=\(k): \(bad) at \(position)")
            }
        }
    }
}

// MARK: - end to end against f32

/// Quantize x (each family's own quantizer) and w, q8 matmul, compare with the f32 product of the
/// original values: the error is bounded by the quantization steps, sum |Δx||w'| + |x||Δw| with
/// |Δx| <= xscale/2 and |Δw| <= wscale/2, plus f32 accumulation.
@Test func q8MatmulApproximatesF32() {
    let (t, n, k) = (5, 17, 513)
    let blocks = fk_q8_blocks(k)
    let x = randomValues(t * k, seed: 11, scale: 2), wf = randomValues(n * k, seed: 12, scale: 0.1)
    let w = Q8Weights(wf, n: n, k: k)
    for family in runnableKernelFamilies("Q8KernelVariantTests." + "approximatesF32", special: .vnni) {
        let xq = Q8Activations(x, ldx: k, t: t, k: k, with: family.table)
        let out = matmul(family.table, xq, w, t: t, n: n, ldo: n)
        var worst = 0.0
        for i in 0..<t {
            for j in 0..<n {
                var exact = 0.0, bound = 0.0, magnitude = 0.0
                for e in 0..<k {
                    let xv = Double(x[i * k + e]), wv = Double(wf[j * k + e])
                    exact += xv * wv
                    let xs = Double(xq.scale[i * blocks + e / 32]), ws = Double(fk_f16_to_f32(w.scale[j * blocks + e / 32]))
                    bound += xs / 2 * abs(w.dequantized(j, e)) + abs(xv) * ws / 2
                    magnitude += abs(xq.dequantized(i, e) * w.dequantized(j, e))
                }
                let err = abs(Double(out[i * n + j]) - exact)
                let allowed = bound * (1 + 1e-5) + magnitude * Double(blocks + 8) * Double(Float.ulpOfOne)
                worst = max(worst, err / bound)
                #expect(err <= allowed, "\(family.name) (\(i), \(j)): error \(err) beyond \(allowed)")
            }
        }
        print("Q8KernelVariantTests: \(family.name) q8 vs f32 error at most \(worst) of the quantization bound")
    }
}
