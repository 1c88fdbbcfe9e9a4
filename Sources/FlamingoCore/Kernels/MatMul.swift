import CBLAS
import CKernels
import Synchronization

// Legend for kernel shapes: T = rows of activations (tokens), K = input features,
// N = output features. Weights follow PyTorch's nn.Linear layout: [N, K], row-major.

/// How a weight matrix is stored, which is how the kernels read it (never widened whole).
public enum WeightFormat: String, Sendable, CaseIterable, Codable {
    case f32, f16, bf16
    /// Blocks of 32 int8 values along each row, one f16 scale per block (llama.cpp's Q8_0 values
    /// and scales, kept as two tensors).
    case int8

    /// Parses `f32`, `f16`, `bf16`, `int8` and the usual spellings (`bfloat16`, `q8_0`, ...).
    public init?(name: String) {
        switch name.lowercased() {
        case "int8", "i8", "q8", "q8_0": self = .int8
        default:
            guard let dtype = DType(name: name) else { return nil }
            self.init(dtype: dtype)
        }
    }

    /// The format of a dense tensor of `dtype` (nil for i8: int8 needs its scales).
    public init?(dtype: DType) {
        switch dtype {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        case .i8: return nil
        }
    }

    /// Bytes of one weight row of `k` values: what a matmul streams per output feature.
    public func rowBytes(_ k: Int) -> Int {
        switch self {
        case .f32: 4 * k
        case .f16, .bf16: 2 * k
        case .int8: k + 2 * ((k + q8BlockSize - 1) / q8BlockSize)
        }
    }
}

/// Values per q8 block along K.
public let q8BlockSize = Int(FK_Q8_BLOCK)

public enum QuantizationError: Error, CustomStringConvertible {
    case notFinite(row: Int)

    public var description: String {
        switch self {
        case .notFinite(let row): "cannot quantize: row \(row) holds a value that is not finite or too large for an f16 scale"
        }
    }
}

/// A weight matrix W [N, K]: dense in its stored dtype, or int8 blocks with f16 scales.
public struct WeightMatrix: Sendable {
    /// [N, K]: f32, f16 or bf16; i8 for int8.
    public let values: Tensor
    /// int8 only: [N, ceil(K/32)] f16 scales.
    public let scales: Tensor?

    public init(_ dense: Tensor) {
        precondition(dense.rank == 2 && dense.dtype != .i8, "a dense weight matrix is 2-D f32/f16/bf16, got \(dense.dtype) \(dense.shape)")
        values = dense
        scales = nil
    }

    public init(int8Values values: Tensor, scales: Tensor) {
        precondition(values.rank == 2 && values.dtype == .i8, "int8 values must be a 2-D I8 tensor")
        precondition(scales.dtype == .f16 && scales.shape == [values.dim(0), Self.blockCount(values.dim(1))],
                     "int8 scales must be F16 [rows, blocks]")
        self.values = values
        self.scales = scales
    }

    public var format: WeightFormat { scales != nil ? .int8 : WeightFormat(dtype: values.dtype)! }
    /// N
    public var rows: Int { values.dim(0) }
    /// K
    public var columns: Int { values.dim(1) }
    public var byteCount: Int { values.byteCount + (scales?.byteCount ?? 0) }
    public var isMapped: Bool { values.isMapped }

    public static func blockCount(_ k: Int) -> Int { (k + q8BlockSize - 1) / q8BlockSize }

    /// Quantizes a dense matrix to int8 blocks in owned memory (`--quantize int8`, `flamingo quantize`).
    /// Every machine gives the same bytes (one quantizer, not per instruction family).
    public static func quantizedInt8(_ dense: Tensor) throws -> WeightMatrix {
        precondition(dense.rank == 2, "quantize: 2-D weights only")
        let (n, k) = (dense.dim(0), dense.dim(1))
        let blocks = blockCount(k)
        var values = Tensor(zeros: [n, k], dtype: .i8)
        var scales = Tensor(zeros: [n, blocks], dtype: .f16)
        let f32 = dense.toF32()
        let failed = Mutex<Int?>(nil)
        values.withUnsafeMutableRawBytes { q in
            scales.withUnsafeMutableRawBytes { s in
                f32.withFloats { w in
                    let qp = UncheckedSendable(q.baseAddress!.assumingMemoryBound(to: Int8.self))
                    let sp = UncheckedSendable(s.baseAddress!.assumingMemoryBound(to: UInt16.self))
                    let wp = UncheckedSendable(w.baseAddress!)
                    parallelFor(n, minChunk: 16) { range in
                        for j in range where fk_quantize_weight_row_q8(qp.value + j * k, sp.value + j * blocks, wp.value + j * k, k) != 0 {
                            failed.withLock { $0 = min($0 ?? j, j) }
                        }
                    }
                }
            }
        }
        if let row = failed.withLock({ $0 }) { throw QuantizationError.notFinite(row: row) }
        return WeightMatrix(int8Values: values, scales: scales)
    }
}

/// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]). `x` is f32; W is read in its stored format.
public func linear(_ x: Tensor, weight: WeightMatrix, bias: Tensor? = nil) -> Tensor {
    let k = x.dim(-1)
    let t = x.count / max(k, 1)
    precondition(weight.columns == k, "linear: x \(x.shape) vs weight \(weight.values.shape)")
    let n = weight.rows
    var outShape = x.shape
    outShape[outShape.count - 1] = n
    // Every output is written (the kernels store, never accumulate), so no zero fill.
    var y = Tensor(uninitialized: outShape)
    y.withMutableFloats { out in
        x.withFloats { inp in
            matmul(out: out.baseAddress!, x: inp.baseAddress!, weight: weight, t: t, k: k, n: n)
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

/// y = x · Wᵀ for a dense weight tensor [N, K].
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
    linear(x, weight: WeightMatrix(weight), bias: bias)
}

/// out[T, N] = x[T, K] · W[N, K]ᵀ through the process's kernels (`KernelTable.active`).
///
/// Activations are prepared once for the weight's format (bf16: rounded to bf16; int8: quantized
/// per block of 32), then each compute thread runs the kernel on its own contiguous range of output
/// features. The kernels are batch invariant, so every output is bit-identical whatever the
/// thread count or the other rows of the batch.
public func matmul(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: WeightMatrix,
                   t: Int, k: Int, n: Int, kernels: KernelTable = .active) {
    if t == 0 || n == 0 { return }
    precondition(weight.rows == n && weight.columns == k, "matmul: weight \(weight.values.shape) for k \(k), n \(n)")
    let out = UncheckedSendable(out)
    switch weight.format {
    case .f32:
        weight.values.withFloats { w in
            let w = UncheckedSendable(w.baseAddress!), x = UncheckedSendable(x)
            forEachOutputRange(n) { j0, rows in
                kernels.f32.matmul_f32(out.value + j0, n, x.value, k, w.value + j0 * k, t, rows, k)
            }
        }
    case .f16:
        weight.values.withUnsafeRawBytes { raw in
            let w = UncheckedSendable(raw.bindMemory(to: UInt16.self).baseAddress!), x = UncheckedSendable(x)
            forEachOutputRange(n) { j0, rows in
                kernels.f16.matmul_f16(out.value + j0, n, x.value, k, w.value + j0 * k, t, rows, k)
            }
        }
    case .bf16:
        // The bf16-rounded activations live in scratch taken here, on the calling thread, before
        // the work fans out; the compute threads only read it.
        TensorMemory.withScratch(byteCount: t * k * MemoryLayout<UInt16>.size) { scratch in
            let rounded = scratch.bindMemory(to: UInt16.self, capacity: t * k)
            let xs = UncheckedSendable(x), r = UncheckedSendable(rounded)
            parallelFor(t * k, minChunk: 1 << 14) { range in
                kernels.bf16.round_bf16(r.value + range.lowerBound, xs.value + range.lowerBound, range.count)
            }
            weight.values.withUnsafeRawBytes { raw in
                let w = UncheckedSendable(raw.bindMemory(to: UInt16.self).baseAddress!)
                forEachOutputRange(n) { j0, rows in
                    kernels.bf16.matmul_bf16(out.value + j0, n, r.value, k, w.value + j0 * k, t, rows, k)
                }
            }
        }
    case .int8:
        let blocks = WeightMatrix.blockCount(k)
        // One scratch block for the quantized rows: q, then scale, then sum, each 64-byte aligned.
        let qBytes = roundUp64(t * blocks * q8BlockSize)
        let scaleBytes = roundUp64(t * blocks * MemoryLayout<Float>.size)
        let sumBytes = t * blocks * MemoryLayout<Int32>.size
        TensorMemory.withScratch(byteCount: qBytes + scaleBytes + sumBytes) { scratch in
            let q = scratch.bindMemory(to: Int8.self, capacity: t * blocks * q8BlockSize)
            let scale = (scratch + qBytes).bindMemory(to: Float.self, capacity: t * blocks)
            let sum = (scratch + qBytes + scaleBytes).bindMemory(to: Int32.self, capacity: t * blocks)
            let xs = UncheckedSendable(x)
            let rows = UncheckedSendable(fk_q8_rows(q: q, scale: scale, sum: sum))
            parallelFor(t, minChunk: 4) { range in
                let r = rows.value, i = range.lowerBound
                let mine = fk_q8_rows(q: r.q + i * blocks * q8BlockSize, scale: r.scale + i * blocks, sum: r.sum + i * blocks)
                kernels.q8.quantize_rows_q8(mine, xs.value + i * k, k, range.count, k)
            }
            weight.values.withUnsafeRawBytes { raw in
                weight.scales!.withUnsafeRawBytes { rawScales in
                    let wq = UncheckedSendable(raw.bindMemory(to: Int8.self).baseAddress!)
                    let ws = UncheckedSendable(rawScales.bindMemory(to: UInt16.self).baseAddress!)
                    forEachOutputRange(n) { j0, count in
                        kernels.q8.matmul_q8(out.value + j0, n, rows.value, wq.value + j0 * k, ws.value + j0 * blocks, t, count, k)
                    }
                }
            }
        }
    }
}

@inline(__always)
private func roundUp64(_ bytes: Int) -> Int { (bytes + 63) & ~63 }

/// Calls `body(firstRow, rowCount)` on contiguous ranges of the `n` output features, spread over
/// the compute threads: each thread takes the next range from a shared counter until none is left,
/// so a thread that streams slower (or started later) does less and no thread waits long for the
/// other at the end. Ranges are multiples of 48 rows, so every one starts on a register-tile
/// boundary of every kernel family (tiles of 3, 4, 6, 8 and 16 rows). Which thread computes a row
/// never changes its value (the kernels are batch invariant).
@inline(__always)
func forEachOutputRange(_ n: Int, _ body: (Int, Int) -> Void) {
    let granule = 48
    let granules = (n + granule - 1) / granule
    let threads = min(ComputeThreads.count, granules)
    if threads <= 1 {
        body(0, n)
        return
    }
    let perRange = max(1, granules / (threads * 8))  // about 8 ranges per thread
    let ranges = (granules + perRange - 1) / perRange
    let next = Atomic<Int>(0)
    parallelFor(threads) { _ in
        while true {
            let r = next.add(1, ordering: .relaxed).oldValue
            if r >= ranges { break }
            let lo = r * perRange * granule
            let hi = min(n, lo + perRange * granule)
            body(lo, hi - lo)
        }
    }
}

/// C[M, N] = A[M, K] · B[N, K]ᵀ, f32, through OpenBLAS (attention scores).
@inline(__always)
public func sgemmNT(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                    m: Int, n: Int, k: Int, lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                1, a, Int32(lda ?? k), b, Int32(ldb ?? k), beta, out, Int32(ldc ?? n))
}

/// C[M, N] = A[M, K] · B[K, N], f32, through OpenBLAS (attention-weighted values).
@inline(__always)
public func sgemmNN(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                    m: Int, n: Int, k: Int, lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                1, a, Int32(lda ?? k), b, Int32(ldb ?? n), beta, out, Int32(ldc ?? n))
}

/// Output features per block of the OpenBLAS f32 path (MachineLimits' sgemm figure). Fixed, so
/// every output is computed by the same BLAS call shape whatever the thread count.
public let outputBlock = 128

/// Calls `body(firstRow, rowCount)` for fixed-size blocks of `n` output features, spread over the
/// compute threads.
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
