import CKernels
import Dispatch
import Foundation
import Synchronization

/// The compute threads behind `parallelFor`: persistent workers that poll for the next job for a
/// short while after each one before they sleep (ggml's CPU threadpool does the same).
///
/// Decode runs hundreds of small matmuls per token, each a few hundred microseconds of weight
/// streaming; waking parked threads for each (DispatchQueue.concurrentPerform) costs tens of
/// microseconds a call and was most of what decode lost to the memory-read bandwidth
/// (scripts/bench/kernels, "layers" column). Workers spin up to `spinNanoseconds` between jobs,
/// then wait on a condition variable, so an idle server or a rank waiting for the network uses no
/// CPU. One job at a time: a caller that finds the pool busy (a second thread, or a nested call)
/// gets nil and runs its work through Dispatch instead.
final class WorkerPool: @unchecked Sendable {
    /// Workers beside the calling thread.
    let workers: Int
    static let spinNanoseconds: UInt64 = 500_000

    private let generation = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let condition = NSCondition()
    // Written by the caller before it publishes a generation, read by workers after they see it.
    private var job: Job?
    private var jobCount = 0

    /// The caller's closure as a concrete field (a generic wrapper would box it in a
    /// reabstraction thunk: a heap allocation per job, i.e. per matmul in decode).
    private struct Job: @unchecked Sendable {
        let body: (Int) -> Void
    }

    private init(workers: Int) {
        self.workers = workers
        for w in 1...workers {
            // Each thread keeps the pool alive until it has seen `stop` (a replaced pool must not
            // be freed under a worker still polling it).
            let thread = Thread { self.work(index: w) }
            thread.name = "flamingo-compute-\(w)"
            thread.start()
        }
    }

    private static let shared = Mutex<WorkerPool?>(nil)

    /// The pool with at least `workers` workers, reserved for the caller; nil if it is busy.
    static func acquire(workers: Int) -> WorkerPool? {
        shared.withLock { pool in
            if let p = pool, p.workers >= workers {
                return p.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged ? p : nil
            }
            if let old = pool {
                guard old.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return nil }
                old.stop()
            }
            let fresh = WorkerPool(workers: workers)
            fresh.busy.store(true, ordering: .relaxed)
            pool = fresh
            return fresh
        }
    }

    /// Runs `body(i)` for i in 0..<count (count <= workers + 1): 0 on the caller, i on worker i.
    /// Returns when every call has returned and every worker has seen the job; then the pool is
    /// free again.
    func run(_ count: Int, _ body: (Int) -> Void) {
        precondition(count >= 1 && count <= workers + 1)
        withoutActuallyEscaping(body) { body in
            job = Job(body: body)
            jobCount = count
            remaining.store(workers, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            body(0)
            var spins = 0
            while remaining.load(ordering: .acquiring) > 0 {
                fk_cpu_relax()
                spins += 1
                if spins & 0xFFF == 0 { sched_yield() }  // a worker descheduled (oversubscribed host)
            }
            job = nil
        }
        busy.store(false, ordering: .releasing)
    }

    private func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }

    private func work(index: Int) {
        var seen = 0  // the generation at creation: a job published before this thread starts still runs
        while true {
            var spins = 0
            var deadline: UInt64 = 0
            while generation.load(ordering: .acquiring) == seen {
                fk_cpu_relax()
                spins += 1
                guard spins & 0xFF == 0 else { continue }
                let now = DispatchTime.now().uptimeNanoseconds
                if deadline == 0 { deadline = now + Self.spinNanoseconds; continue }
                if now < deadline { continue }
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            // Every worker checks in, even one with no part in this job, so the caller cannot
            // publish the next job while a worker still reads this one's.
            if index < jobCount, let job { job.body(index) }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
