import CBLAS
import Dispatch
import Foundation
import Synchronization

/// The process's compute threads (`parallelFor`). Process-wide; with several ranks on one machine
/// give each rank cores / ranks. OpenBLAS is always kept single-threaded: the kernels split work
/// into fixed blocks themselves, so results do not depend on the thread count.
public enum ComputeThreads {
    private static let configured = Atomic<Int>(0)

    /// Threads used by `parallelFor` and OpenBLAS.
    public static var count: Int {
        let n = configured.load(ordering: .relaxed)
        if n > 0 { return n }
        configure(ProcessInfo.processInfo.activeProcessorCount)
        return configured.load(ordering: .relaxed)
    }

    /// Sets the number of compute threads (>= 1) for this process.
    public static func configure(_ threads: Int) {
        let n = max(1, threads)
        configured.store(n, ordering: .relaxed)
        openblas_set_num_threads(1)
    }
}

/// Runs `body(range)` over `0..<count` split into at most `ComputeThreads.count` contiguous chunks.
/// Small jobs (fewer than `minChunk` items per thread) run inline. Chunks run on the WorkerPool
/// (Dispatch when another caller holds it).
@inline(__always)
public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let threads = min(ComputeThreads.count, max(1, count / max(minChunk, 1)))
    if threads <= 1 || count <= 1 {
        body(0..<count)
        return
    }
    let chunk = (count + threads - 1) / threads
    if let pool = WorkerPool.acquire(workers: threads - 1) {
        pool.run(threads) { t in
            let lo = t * chunk
            let hi = min(count, lo + chunk)
            if lo < hi { body(lo..<hi) }
        }
        return
    }
    withoutActuallyEscaping(body) { body in
        // The chunks are disjoint and concurrentPerform returns only when all are done, so sharing
        // the caller's closure (and the buffers it captures) across threads is safe.
        let shared = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            let lo = t * chunk
            let hi = min(count, lo + chunk)
            if lo < hi { shared.value(lo..<hi) }
        }
    }
}

/// Carries a value across a concurrency boundary the compiler cannot see is safe.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
