import CBLAS

// Legend for kernel shapes: T = rows of activations (tokens), K = input features,
// N = output features. Weights follow PyTorch's nn.Linear layout: [N, K], row-major.

/// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]). `x` is f32; `W` may be f32, f16 or bf16 and is read
/// in its stored type (mapped weights are never copied whole).
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
    let k = x.dim(-1)
    let t = x.count / max(k, 1)
    precondition(weight.rank == 2 && weight.dim(1) == k, "linear: x \(x.shape) vs weight \(weight.shape)")
    let n = weight.dim(0)
    var outShape = x.shape
    outShape[outShape.count - 1] = n
    var y = Tensor(zeros: outShape)
    y.withMutableFloats { out in
        x.withFloats { inp in
            matmulTransposedWeight(out: out.baseAddress!, x: inp.baseAddress!, weight: weight, t: t, k: k, n: n)
        }
        if let bias {
            precondition(bias.count == n, "linear: bias \(bias.shape) for \(n) outputs")
            let b = bias.toF32()
            b.withFloats { bp in
                for row in 0..<t {
                    let o = out.baseAddress! + row * n
                    for j in 0..<n { o[j] += bp[j] }
                }
            }
        }
    }
    return y
}

/// out[T, N] = x[T, K] · W[N, K]ᵀ with `W` of any dtype.
public func matmulTransposedWeight(
    out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: Tensor, t: Int, k: Int, n: Int
) {
    if t == 0 || n == 0 { return }
    switch weight.dtype {
    case .f32:
        weight.withFloats { w in
            let wp = w.baseAddress!
            forEachOutputBlock(n) { j0, rows in
                sgemmNT(out: out + j0, a: x, b: wp + j0 * k, m: t, n: rows, k: k, ldc: n)
            }
        }
    case .bf16, .f16:
        weight.withUnsafeRawBytes { raw in
            let w = raw.bindMemory(to: UInt16.self).baseAddress!
            if t <= 2 {
                // Decode: stream the weight once, widening in registers.
                halfGEMV(out: out, x: x, w: w, dtype: weight.dtype, t: t, k: k, n: n)
            } else {
                halfGEMMByWidenedBlocks(out: out, x: x, w: w, dtype: weight.dtype, t: t, k: k, n: n)
            }
        }
    }
}

/// C[M, N] = A[M, K] · B[N, K]ᵀ, f32, through OpenBLAS.
@inline(__always)
public func sgemmNT(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                    m: Int, n: Int, k: Int, lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                1, a, Int32(lda ?? k), b, Int32(ldb ?? k), beta, out, Int32(ldc ?? n))
}

/// C[M, N] = A[M, K] · B[K, N], f32, through OpenBLAS.
@inline(__always)
public func sgemmNN(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                    m: Int, n: Int, k: Int, lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                1, a, Int32(lda ?? k), b, Int32(ldb ?? n), beta, out, Int32(ldc ?? n))
}

/// Widens one row of 16-bit floats to f32.
@inline(__always)
func widenRow(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, _ count: Int, _ dtype: DType) {
    if dtype == .bf16 {
        let s = UnsafeRawPointer(src).assumingMemoryBound(to: SIMD8<UInt16>.self)
        let d = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: SIMD8<UInt32>.self)
        let vec = count / 8
        for i in 0..<vec {
            let v = UnsafeRawPointer(s + i).loadUnaligned(as: SIMD8<UInt16>.self)
            UnsafeMutableRawPointer(d + i).storeBytes(of: SIMD8<UInt32>(truncatingIfNeeded: v) &<< 16, as: SIMD8<UInt32>.self)
        }
        for i in (vec * 8)..<count { dst[i] = bf16ToFloat(src[i]) }
    } else {
        for i in 0..<count { dst[i] = f16ToFloat(src[i]) }
    }
}

/// Output features per block. Fixed, so every output element is computed by the same BLAS call
/// shape whatever the thread count: results are bit-identical for 1 thread or 64, and across
/// pipeline layouts that give ranks different thread counts.
public let outputBlock = 128

/// Calls `body(firstRow, rowCount)` for fixed-size blocks of `n` output features, blocks spread
/// over the compute threads (OpenBLAS itself runs single-threaded: see `ComputeThreads`).
@inline(__always)
func forEachOutputBlock(_ n: Int, _ body: (Int, Int) -> Void) {
    let blocks = (n + outputBlock - 1) / outputBlock
    parallelFor(blocks) { range in
        for b in range {
            let j0 = b * outputBlock
            body(j0, min(outputBlock, n - j0))
        }
    }
}

/// Prefill with 16-bit weights: each thread widens a block of weight rows to f32 and hands it to
/// sgemm, so the arithmetic runs at BLAS speed while only a block per thread is resident in f32.
func halfGEMMByWidenedBlocks(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<UInt16>,
                             dtype: DType, t: Int, k: Int, n: Int) {
    forEachOutputBlock(n) { j0, rows in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: rows * k)
        defer { scratch.deallocate() }
        for i in 0..<rows { widenRow(w + (j0 + i) * k, scratch + i * k, k, dtype) }
        sgemmNT(out: out + j0, a: x, b: scratch, m: t, n: rows, k: k, ldc: n)
    }
}

/// Decode with 16-bit weights: each output is a dot product over one weight row, widened on the fly.
func halfGEMV(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<UInt16>,
              dtype: DType, t: Int, k: Int, n: Int) {
    parallelFor(n, minChunk: 64) { rows in
        for j in rows {
            let wrow = w + j * k
            for r in 0..<t {
                out[r * n + j] = dotHalf(wrow, x + r * k, k, dtype)
            }
        }
    }
}

@inline(__always)
func dotHalf(_ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, _ k: Int, _ dtype: DType) -> Float {
    var acc0 = SIMD8<Float>(repeating: 0), acc1 = SIMD8<Float>(repeating: 0)
    let vec = k / 16
    let wr = UnsafeRawPointer(w), xr = UnsafeRawPointer(x)
    var i = 0
    if dtype == .bf16 {
        for _ in 0..<vec {
            let w0 = wr.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt16>.self)
            let w1 = wr.loadUnaligned(fromByteOffset: i * 2 + 16, as: SIMD8<UInt16>.self)
            let f0 = unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: w0) &<< 16, to: SIMD8<Float>.self)
            let f1 = unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: w1) &<< 16, to: SIMD8<Float>.self)
            acc0 += f0 * xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            acc1 += f1 * xr.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var s = (acc0 + acc1).sum()
        while i < k { s += bf16ToFloat(w[i]) * x[i]; i += 1 }
        return s
    } else {
        var s: Float = 0
        for j in 0..<k { s += f16ToFloat(w[j]) * x[j] }
        return s
    }
}
