import Foundation

// Legend: T query rows, S key/value rows, H heads of D dims; q/k/v rows hold all heads side by
// side ([T, H·D]), the layout linear projections produce, so no transposes are needed.

/// Which keys a query row may see.
public enum AttentionMask: Sendable, Equatable {
    /// Every query sees every key (vision encoder, resampler, cross-attention to one image).
    case none
    /// Query row i sees keys 0 ... offset + i (self-attention where the first `offset` keys are cached).
    case causal(offset: Int)
}

/// out[T, H·D] = softmax(q·kᵀ·scale + mask)·v, per head: BLAS products, the kernel table's softmax.
/// Grouped-query attention: k and v hold `keyValueHeads` heads ([S, Hkv·D], default H), and query
/// head h reads key/value head h / (H / Hkv), as transformers' `repeat_kv` lays them out.
/// `ldq`, `ldk`, `ldv`, `ldo` are row strides in floats (default H·D for q and out, Hkv·D for k, v).
public func attention(
    out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    t: Int, s: Int, heads: Int, keyValueHeads: Int? = nil, headDim: Int, scale: Float, mask: AttentionMask,
    ldq: Int? = nil, ldk: Int? = nil, ldv: Int? = nil, ldo: Int? = nil
) {
    if t == 0 { return }
    let kvHeads = keyValueHeads ?? heads
    precondition(kvHeads > 0 && heads % kvHeads == 0, "attention: \(heads) query heads over \(kvHeads) key/value heads")
    let width = heads * headDim, kvWidth = kvHeads * headDim, group = heads / kvHeads
    let (ldq, ldk, ldv, ldo) = (ldq ?? width, ldk ?? kvWidth, ldv ?? kvWidth, ldo ?? width)
    // Heads in parallel, one contiguous group of heads per compute thread, each group with its own
    // scores [T, S] in one scratch block taken here on the calling thread; rows of a head never
    // split, so the result does not depend on the thread count. A group's scores get room for S
    // rounded up to 256 keys, so the scratch only changes size class every 256 positions while
    // decode grows S by one per token (llama.cpp pads its attended KV length to 256 likewise).
    let kernels = KernelTable.active
    let groups = min(ComputeThreads.count, heads)
    let headsPerGroup = (heads + groups - 1) / groups
    let groupFloats = t * ((s + 255) / 256 * 256)
    TensorMemory.withScratch(byteCount: max(1, groups * groupFloats) * MemoryLayout<Float>.size) { scratch in
        let allScores = scratch.bindMemory(to: Float.self, capacity: max(1, groups * groupFloats))
        parallelFor(groups) { range in
            for g in range {
                let scores = allScores + g * groupFloats
                for h in (g * headsPerGroup)..<min(heads, (g + 1) * headsPerGroup) {
                    let off = h * headDim, kvOff = (h / group) * headDim
                    sgemmNT(out: scores, a: q + off, b: k + kvOff, m: t, n: s, k: headDim, lda: ldq, ldb: ldk, ldc: s)
                    for i in 0..<t {
                        let row = scores + i * s
                        let visible: Int
                        switch mask {
                        case .none: visible = s
                        case .causal(let offset): visible = min(s, offset + i + 1)
                        }
                        kernels.f32.softmax(row, visible, scale)
                        for j in visible..<s { row[j] = 0 }
                    }
                    sgemmNN(out: out + off, a: scores, b: v + kvOff, m: t, n: headDim, k: s, lda: s, ldb: ldv, ldc: ldo)
                }
            }
        }
    }
}

/// Tensor form: q [T, H·D], k and v [S, Hkv·D] → [T, H·D].
public func attention(q: Tensor, k: Tensor, v: Tensor, heads: Int, keyValueHeads: Int? = nil, scale: Float,
                      mask: AttentionMask) -> Tensor {
    let width = q.dim(-1), kvHeads = keyValueHeads ?? heads
    let kvWidth = width / heads * kvHeads
    let t = q.count / width
    let s = k.count / kvWidth
    precondition(width % heads == 0 && k.dim(-1) == kvWidth && v.dim(-1) == kvWidth && v.count == k.count,
                 "attention: q \(q.shape) k \(k.shape) v \(v.shape)")
    var out = Tensor(zeros: [t, width])
    out.withMutableFloats { o in
        q.withFloats { qp in
            k.withFloats { kp in
                v.withFloats { vp in
                    attention(out: o.baseAddress!, q: qp.baseAddress!, k: kp.baseAddress!, v: vp.baseAddress!,
                              t: t, s: s, heads: heads, keyValueHeads: kvHeads, headDim: width / heads, scale: scale, mask: mask)
                }
            }
        }
    }
    return out
}
