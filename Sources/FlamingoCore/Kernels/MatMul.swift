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
    linear(x, count: 1, weight: { _ in weight }, bias: { _ in bias })[0]!
}

/// (a, b) applied to the same x in one pass over their weights (gate/up, K/V), as
/// `matmul(group:...)`: the same values as one `linear` each. The weights share a format.
public func linear(_ x: Tensor, _ a: WeightMatrix, _ b: WeightMatrix,
                   biases: (Tensor?, Tensor?) = (nil, nil)) -> (Tensor, Tensor) {
    let ys = linear(x, count: 2, weight: { $0 == 0 ? a : b }, bias: { $0 == 0 ? biases.0 : biases.1 })
    return (ys[0]!, ys[1]!)
}

/// (a, b, c) applied to the same x in one pass over their weights (Q/K/V); see `linear(_:_:_:)`.
public func linear(_ x: Tensor, _ a: WeightMatrix, _ b: WeightMatrix, _ c: WeightMatrix,
                   biases: (Tensor?, Tensor?, Tensor?) = (nil, nil, nil)) -> (Tensor, Tensor, Tensor) {
    let ys = linear(x, count: 3, weight: { $0 == 0 ? a : $0 == 1 ? b : c },
                    bias: { $0 == 0 ? biases.0 : $0 == 1 ? biases.1 : biases.2 })
    return (ys[0]!, ys[1]!, ys[2]!)
}

/// y_m[T, N_m] = x[T, K] · W_m[N_m, K]ᵀ (+ bias_m) for `count` ≤ `MatrixGroup.capacity` weights of
/// one format. Everything per call lives inline (no heap storage besides the output tensors):
/// decode runs this for every projection of every token.
@inline(__always)
private func linear(_ x: Tensor, count: Int, weight: (Int) -> WeightMatrix, bias: (Int) -> Tensor?)
    -> InlineArray<3, Tensor?> {
    let k = x.dim(-1)
    let t = x.count / max(k, 1)
    // Every output is written (the kernels store, never accumulate), so no zero fill.
    var ys = InlineArray<3, Tensor?>(repeating: nil)
    var group = MatrixGroup()
    for m in 0..<count {
        let w = weight(m)
        precondition(w.columns == k, "linear: x \(x.shape) vs weight \(w.values.shape)")
        var shape = x.shape
        shape[shape.count - 1] = w.rows
        var y = Tensor(uninitialized: shape)
        group.append(w, out: y.withMutableFloats { $0.baseAddress! })
        ys[m] = y
    }
    // The outputs' and the weights' storage is class-owned and outlives the call (ys and the
    // callers' weights hold it).
    withExtendedLifetime(ys) {
        x.withFloats { inp in matmul(group: group, x: inp.baseAddress!, t: t, k: k) }
    }
    for m in 0..<count {
        guard let b = bias(m) else { continue }
        let n = group.rows[m]
        precondition(b.count == n, "linear: bias \(b.shape) for \(n) outputs")
        let out = group.outs[m]!
        b.toF32().withFloats { bp in
            for row in 0..<t {
                let o = out + row * n
                for j in 0..<n { o[j] += bp[j] }
            }
        }
    }
    return ys
}

/// y = x · Wᵀ for a dense weight tensor [N, K].
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
    linear(x, weight: WeightMatrix(weight), bias: bias)
}

/// out[T, N] = x[T, K] · W[N, K]ᵀ through the process's kernels (`KernelTable.active`).
public func matmul(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: WeightMatrix,
                   t: Int, k: Int, n: Int, kernels: KernelTable = .active) {
    precondition(weight.rows == n && weight.columns == k, "matmul: weight \(weight.values.shape) for n \(n), k \(k)")
    var group = MatrixGroup()
    group.append(weight, out: out)
    withExtendedLifetime(weight) { matmul(group: group, x: x, t: t, k: k, kernels: kernels) }
}

/// Up to three weight matrices of one format that read the same input, each with its output
/// [T, N_m], as base pointers held inline (no heap storage). The caller keeps the weights and
/// outputs alive while a matmul reads the group.
struct MatrixGroup {
    static let capacity = 3
    private(set) var count = 0
    private(set) var format = WeightFormat.f32
    private(set) var rows = InlineArray<3, Int>(repeating: 0)
    private(set) var values = InlineArray<3, UnsafeRawPointer?>(repeating: nil)
    /// int8 only: [N_m, ceil(K/32)] f16 scales.
    private(set) var scales = InlineArray<3, UnsafePointer<UInt16>?>(repeating: nil)
    private(set) var outs = InlineArray<3, UnsafeMutablePointer<Float>?>(repeating: nil)

    mutating func append(_ w: WeightMatrix, out: UnsafeMutablePointer<Float>) {
        precondition(count < Self.capacity, "matmul: at most \(Self.capacity) matrices in a group")
        precondition(count == 0 || w.format == format, "matmul: weight \(w.format) in a group of \(format)")
        format = w.format
        rows[count] = w.rows
        values[count] = w.values.withUnsafeRawBytes { UnsafeRawPointer($0.baseAddress!) }
        scales[count] = w.scales?.withUnsafeRawBytes { $0.baseAddress!.assumingMemoryBound(to: UInt16.self) }
        outs[count] = out
        count += 1
    }
}

/// outs[m][T, N_m] = x[T, K] · W_m[N_m, K]ᵀ for the group's weights (all [N_m, K], one format):
/// one pass over the weights, as if they were one matrix.
///
/// Activations are prepared once for the weights' format (bf16: rounded to bf16; int8: quantized
/// per block of 32), then the compute threads share out contiguous ranges of output features of
/// all the matrices (one fan-out, not one per matrix). The kernels are batch invariant, so every
/// output is bit-identical whatever the thread count, the other rows of the batch or the matrices
/// it is grouped with.
func matmul(group: MatrixGroup, x: UnsafePointer<Float>, t: Int, k: Int, kernels: KernelTable = .active) {
    guard t > 0, group.count > 0 else { return }
    let g = UncheckedSendable(group), xs = UncheckedSendable(x)
    switch group.format {
    case .f32:
        forEachOutputRange(group) { m, j0, count in
            let w = g.value.values[m]!.assumingMemoryBound(to: Float.self)
            kernels.f32.matmul_f32(g.value.outs[m]! + j0, g.value.rows[m], xs.value, k, w + j0 * k, t, count, k)
        }
    case .f16:
        forEachOutputRange(group) { m, j0, count in
            let w = g.value.values[m]!.assumingMemoryBound(to: UInt16.self)
            kernels.f16.matmul_f16(g.value.outs[m]! + j0, g.value.rows[m], xs.value, k, w + j0 * k, t, count, k)
        }
    case .bf16:
        // The bf16-rounded activations live in scratch taken here, on the calling thread, before
        // the work fans out; the compute threads only read it.
        TensorMemory.withScratch(byteCount: t * k * MemoryLayout<UInt16>.size) { scratch in
            let r = UncheckedSendable(scratch.bindMemory(to: UInt16.self, capacity: t * k))
            parallelFor(t * k, minChunk: 1 << 14) { range in
                kernels.bf16.round_bf16(r.value + range.lowerBound, xs.value + range.lowerBound, range.count)
            }
            forEachOutputRange(group) { m, j0, count in
                let w = g.value.values[m]!.assumingMemoryBound(to: UInt16.self)
                kernels.bf16.matmul_bf16(g.value.outs[m]! + j0, g.value.rows[m], r.value, k, w + j0 * k, t, count, k)
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
            let quantized = UncheckedSendable(fk_q8_rows(q: q, scale: scale, sum: sum))
            parallelFor(t, minChunk: 4) { range in
                let r = quantized.value, i = range.lowerBound
                let mine = fk_q8_rows(q: r.q + i * blocks * q8BlockSize, scale: r.scale + i * blocks, sum: r.sum + i * blocks)
                kernels.q8.quantize_rows_q8(mine, xs.value + i * k, k, range.count, k)
            }
            forEachOutputRange(group) { m, j0, count in
                let w = g.value.values[m]!.assumingMemoryBound(to: Int8.self)
                kernels.q8.matmul_q8(g.value.outs[m]! + j0, g.value.rows[m], quantized.value, w + j0 * k,
                                     g.value.scales[m]! + j0 * blocks, t, count, k)
            }
        }
    }
}

@inline(__always)
private func roundUp64(_ bytes: Int) -> Int { (bytes + 63) & ~63 }

/// Calls `body(matrix, firstRow, rowCount)` on contiguous ranges of the output features of the
/// group's matrices, spread over the compute threads: each thread takes the next range from a
/// shared counter until none is left (guided: a range is 1 / (2 · threads) of what is left, at
/// least one granule, never across two matrices), so the ranges shrink towards the end and no
/// thread waits long for another (a thread that streams slower, or started later, simply takes
/// fewer). Ranges are multiples of 48 rows, so every one starts on a register-tile boundary of
/// every kernel family (tiles of 3, 4, 6, 8 and 16 rows). Which thread computes a row never
/// changes its value (the kernels are batch invariant).
@inline(__always)
func forEachOutputRange(_ group: MatrixGroup, _ body: (Int, Int, Int) -> Void) {
    let granule = 48
    // firstGranule[m] ..< firstGranule[m + 1]: matrix m's granules in one numbering.
    var firstGranule = InlineArray<4, Int>(repeating: 0)
    for m in 0..<group.count { firstGranule[m + 1] = firstGranule[m] + (group.rows[m] + granule - 1) / granule }
    let granules = firstGranule[group.count]
    let threads = min(ComputeThreads.count, granules)
    if threads <= 1 {
        for m in 0..<group.count where group.rows[m] > 0 { body(m, 0, group.rows[m]) }
        return
    }
    let rows = group.rows
    let next = Atomic<Int>(0)
    parallelFor(threads) { _ in
        var start = next.load(ordering: .relaxed)
        var m = 0
        while start < granules {
            while firstGranule[m + 1] <= start { m += 1 }
            let size = min(max(1, (granules - start) / (2 * threads)), firstGranule[m + 1] - start)
            let (exchanged, current) = next.compareExchange(expected: start, desired: start + size, ordering: .relaxed)
            guard exchanged else {
                start = current
                continue
            }
            let lo = (start - firstGranule[m]) * granule
            body(m, lo, min(rows[m], lo + size * granule) - lo)
            start = next.load(ordering: .relaxed)
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
