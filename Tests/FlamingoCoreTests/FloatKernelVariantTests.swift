import Foundation
import Testing
import CKernels

// The float members (round_bf16, matmul_f32, matmul_f16, matmul_bf16) of every kernel family the CPU
// can run (portable always; avx2, avx512, avx512_bf16 when /proc/cpuinfo lists their instructions)
// against the naive twins: shapes with tails in K, N and T, row strides larger than the rows, and
// batch invariance (a row computed alone is bit-identical to the same row computed in a batch, at
// any column offset). The error bound scales with sum |x||w|, itself computed by the naive kernel on
// absolute values, so the heavy reference work runs in C and the suite stays fast in debug builds.

// MARK: - Families

// MARK: - Data

enum FloatWeightType: String, CaseIterable, Sendable { case f32, f16, bf16 }

private func bf16Bits(_ values: [Float]) -> [UInt16] {
    var out = [UInt16](repeating: 0, count: values.count)
    values.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { fk_naive.round_bf16($0.baseAddress, src.baseAddress, values.count) } }
    return out
}

/// X (t rows, stride ldx) and W (n rows of k) of one weight type, as the kernels take them, plus |X|
/// and |W| in the same encoding for the error bound.
private struct Operands {
    let type: FloatWeightType
    let t: Int, n: Int, k: Int, ldx: Int
    var xf: [Float] = [], wf: [Float] = []      // f32 activations; f32 weights
    var xh: [UInt16] = [], wh: [UInt16] = []    // bf16 activations; f16 / bf16 weights
    var axf: [Float] = [], awf: [Float] = []
    var axh: [UInt16] = [], awh: [UInt16] = []

    init(_ type: FloatWeightType, t: Int, n: Int, k: Int, ldx: Int, seed: UInt64) {
        self.type = type
        (self.t, self.n, self.k, self.ldx) = (t, n, k, ldx)
        var rng = Rng(state: seed)
        let x = (0..<(t * ldx)).map { _ in rng.next() }
        let w = (0..<(n * k)).map { _ in rng.next() }
        switch type {
        case .f32:
            (xf, wf) = (x, w)
            (axf, awf) = (x.map(abs), w.map(abs))
        case .f16:
            xf = x
            wh = w.map { fk_f32_to_f16($0) }
            axf = x.map(abs)
            awh = wh.map { $0 & 0x7FFF }
        case .bf16:
            xh = bf16Bits(x)
            wh = bf16Bits(w)
            axh = xh.map { $0 & 0x7FFF }
            awh = wh.map { $0 & 0x7FFF }
        }
    }

    /// out[rows, cols] for X rows [row, row + rows) and W rows [col, col + cols), row stride ldo.
    func run(_ table: fk_kernels, into out: inout [Float], ldo: Int, row: Int = 0, rows: Int? = nil, col: Int = 0,
             cols: Int? = nil, absolute: Bool = false) {
        let rows = rows ?? t, cols = cols ?? n
        precondition(out.count >= (rows - 1) * ldo + cols)
        let (t, k, ldx) = (rows, self.k, self.ldx)
        out.withUnsafeMutableBufferPointer { o in
            switch type {
            case .f32:
                (absolute ? axf : xf).withUnsafeBufferPointer { x in
                    (absolute ? awf : wf).withUnsafeBufferPointer { w in
                        table.matmul_f32(o.baseAddress, ldo, x.baseAddress! + row * ldx, ldx, w.baseAddress! + col * k, t, cols, k)
                    }
                }
            case .f16:
                (absolute ? axf : xf).withUnsafeBufferPointer { x in
                    (absolute ? awh : wh).withUnsafeBufferPointer { w in
                        table.matmul_f16(o.baseAddress, ldo, x.baseAddress! + row * ldx, ldx, w.baseAddress! + col * k, t, cols, k)
                    }
                }
            case .bf16:
                (absolute ? axh : xh).withUnsafeBufferPointer { x in
                    (absolute ? awh : wh).withUnsafeBufferPointer { w in
                        table.matmul_bf16(o.baseAddress, ldo, x.baseAddress! + row * ldx, ldx, w.baseAddress! + col * k, t, cols, k)
                    }
                }
            }
        }
    }
}

private let sentinel: Float = -12345.5

// MARK: - Against the naive twins

private let ks = [1, 7, 31, 33, 100, 513]
private let ns = [1, 5, 17, 130]
private let ts = [1, 2, 3, 5, 9]

@Test(arguments: FloatWeightType.allCases)
func floatMatmulMatchesNaive(type: FloatWeightType) {
    var shapes: [(t: Int, n: Int, k: Int)] = []
    for k in ks { for n in ns { for t in ts { shapes.append((t, n, k)) } } }
    shapes += [(64, 130, 33), (64, 17, 513), (64, 5, 100), (3, 17, 1100), (300, 9, 40)]  // many row tiles; K chunks; row blocks
    for family in runnableKernelFamilies("FloatKernelVariantTests.floatMatmulMatchesNaive(\(type))", special: .bf16) {
        var maxRelative = 0.0
        for (index, shape) in shapes.enumerated() {
            let (t, n, k) = shape
            let ldx = k + (index % 2) * 3, ldo = n + (index % 3) * 2
            let ops = Operands(type, t: t, n: n, k: k, ldx: ldx, seed: UInt64(index + 1))
            var reference = [Float](repeating: 0, count: t * ldo), bound = reference
            ops.run(fk_naive, into: &reference, ldo: ldo)
            ops.run(fk_naive, into: &bound, ldo: ldo, absolute: true)
            var got = [Float](repeating: sentinel, count: t * ldo)
            ops.run(family.table, into: &got, ldo: ldo)
            var bad = 0
            for i in 0..<t {
                for j in 0..<ldo {
                    let v = got[i * ldo + j]
                    if j >= n {
                        if v != sentinel { bad += 1 }  // outside the output: must stay untouched
                        continue
                    }
                    let error = abs(Double(v) - Double(reference[i * ldo + j]))
                    let scale = Double(bound[i * ldo + j])
                    let relative = error / max(scale, 1e-30)
                    maxRelative = max(maxRelative, relative)
                    if !(error <= 1e-5 * scale + 1e-30) { bad += 1 }
                }
            }
            #expect(bad == 0, "\(family.name) \(type) t=\(t) n=\(n) k=\(k) ldx=\(ldx) ldo=\(ldo): \(bad) wrong outputs")
        }
        print("FloatKernelVariantTests: \(family.name) matmul_\(type): max |error| / sum|x||w| = \(maxRelative)")
    }
}

// MARK: - Batch invariance

private func sameBits(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern }

@Test(arguments: FloatWeightType.allCases)
func floatMatmulIsBatchInvariant(type: FloatWeightType) {
    // K: one vector, tails, and several K chunks of the GEMM path (KC is 256 or 512).
    for family in runnableKernelFamilies("FloatKernelVariantTests.floatMatmulIsBatchInvariant(\(type))", special: .bf16) {
        for (index, k) in [5, 33, 100, 1100].enumerated() {
            let (t, n, ldx, ldo) = (9, 37, k + 5, 41)
            let ops = Operands(type, t: t, n: n, k: k, ldx: ldx, seed: UInt64(100 + index))
            var batch = [Float](repeating: sentinel, count: t * ldo)
            ops.run(family.table, into: &batch, ldo: ldo)
            var mismatches: [String] = []
            // Each row alone (T = 1: the GEMV path), all columns and from column offsets that shift
            // the weight-row tiles.
            for i in 0..<t {
                for col in [0, 1, 7, 13] {
                    var row = [Float](repeating: sentinel, count: n - col)
                    ops.run(family.table, into: &row, ldo: n - col, row: i, rows: 1, col: col, cols: n - col)
                    for j in 0..<(n - col) where !sameBits(row[j], batch[i * ldo + col + j]) {
                        mismatches.append("row \(i) alone, col \(col + j) (offset \(col))")
                    }
                }
            }
            // Sub-batches that move rows to other positions of the row tiles: T = 2, 3 (unpacked),
            // T = 7 from row 2 at column offset 3 (packed, another tile grid).
            for (first, rows, col) in [(0, 2, 0), (4, 3, 5), (2, 7, 3)] {
                var sub = [Float](repeating: sentinel, count: rows * ldo)
                ops.run(family.table, into: &sub, ldo: ldo, row: first, rows: rows, col: col, cols: n - col)
                for i in 0..<rows {
                    for j in 0..<(n - col) where !sameBits(sub[i * ldo + j], batch[(first + i) * ldo + col + j]) {
                        mismatches.append("rows \(first)..<\(first + rows), row \(first + i), col \(col + j)")
                    }
                }
            }
            #expect(mismatches.isEmpty, "\(family.name) \(type) k=\(k): \(mismatches.count) outputs differ from the batch, e.g. \(mismatches.prefix(3))")
        }
    }
}

// MARK: - round_bf16

@Test func roundBF16MatchesNaive() {
    var rng = Rng(state: 77)
    var bits: [UInt32] = (0..<1000).map { _ in
        var u = rng.bits()
        if u & 0x7F80_0000 == 0 { u |= 0x0080_0000 }  // no denormals (hardware variants may flush them)
        return u
    }
    for i in stride(from: 0, to: 1000, by: 7) { bits[i] = (bits[i] & 0xFFFF_0000) | 0x8000 }   // ties, both parities
    for i in stride(from: 3, to: 1000, by: 11) { bits[i] = (bits[i] & 0xFFFF_0000) | 0x7FFF } // just below a tie
    let specials: [UInt32] = [
        0x7F80_0000, 0xFF80_0000,  // ±inf
        0x7FC0_0000, 0xFFC0_0000,  // quiet NaNs
        0x7F80_0001, 0xFF80_0001,  // signalling NaNs, payload only in the low bits
        0x7FA0_0000, 0x7F81_2345,  // signalling NaNs with upper payload bits
        0x7F7F_FFFF, 0xFF7F_FFFF,  // max finite: rounds to ±inf
        0x0000_0000, 0x8000_0000,  // ±0
        0x3F80_8000, 0x3F81_8000,  // ties to even, down and up
        0x0080_0000, 0x8080_0000,  // smallest normals
    ]
    for (i, s) in specials.enumerated() { bits[10 * i + 1] = s }
    let src = bits.map { Float(bitPattern: $0) }
    for family in runnableKernelFamilies("FloatKernelVariantTests." + "roundBF16MatchesNaive", special: .bf16) {
        for count in Array(0...40) + [1000] {
            var expected = [UInt16](repeating: 0xAAAA, count: count + 3), got = expected
            src.withUnsafeBufferPointer { s in
                expected.withUnsafeMutableBufferPointer { fk_naive.round_bf16($0.baseAddress, s.baseAddress, count) }
                got.withUnsafeMutableBufferPointer { family.table.round_bf16($0.baseAddress, s.baseAddress, count) }
            }
            let wrong = (0..<(count + 3)).filter { expected[$0] != got[$0] }
            #expect(wrong.isEmpty, "\(family.name) round_bf16 count=\(count): \(wrong.count) differ, e.g. \(wrong.prefix(3).map { String(src[$0].bitPattern, radix: 16) })")
        }
    }
}
