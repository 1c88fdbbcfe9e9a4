import Foundation
import Testing
import FlamingoCore

// TensorMemory, the caching allocator behind owned tensors and the kernels' scratch. Each test runs
// on a thread of its own, so it starts with an empty thread cache and other tests running at the
// same time cannot change its counters.


@Test func reusedMemoryIsZeroedForZeros() throws {
    let (zeros, stats) = try TensorMemory.measuredOnNewThread { () -> [Float] in
        do {
            var dirty = Tensor(uninitialized: [1000])
            dirty.withMutableFloats { for i in $0.indices { $0[i] = .nan } }
        }
        return Tensor(zeros: [1000]).scalars
    }
    #expect(zeros.allSatisfy { $0 == 0 }, "Tensor(zeros:) on a reused block must be zeros")
    #expect(stats.ownCacheMisses == 1 && ownHits(stats) == 1, "\(stats)")
}

/// Allocations the thread's own cache served.
func ownHits(_ s: TensorMemory.Statistics) -> Int { s.cacheHits - s.sharedCacheHits }

@Test func sizesOfOneClassShareBlocks() throws {
    // 100 and 112 bytes are both in the 112-byte class; 113 is in the next one (128).
    let (_, stats) = try TensorMemory.measuredOnNewThread {
        _ = Tensor(uninitialized: [25])  // 100 bytes
        _ = Tensor(uninitialized: [28])  // 112 bytes
        _ = Tensor(uninitialized: [113], dtype: .i8)
    }
    #expect(stats.ownCacheMisses == 2 && ownHits(stats) == 1, "\(stats)")
    #expect(stats.cachedBytes == 112 + 128, "\(stats)")
}

@Test func largeBlocksBypassTheCache() throws {
    let floats = TensorMemory.largestCachedBlock / 4 + 1
    let (_, stats) = try TensorMemory.measuredOnNewThread {
        for _ in 0..<3 { _ = Tensor(uninitialized: [floats]) }
    }
    #expect(stats.systemAllocations == 3 && stats.systemFrees == 3 && stats.cacheHits == 0, "\(stats)")
    #expect(stats.cachedBytes == 0)
}

@Test func threadCacheStaysWithinItsLimit() throws {
    // 48 live blocks of 1 MiB freed together: the thread keeps what fits in its limit; the rest goes
    // to the shared pool or back to the system.
    let (kept, stats) = try TensorMemory.measuredOnNewThread { () -> Int in
        var live: [Tensor] = []
        for _ in 0..<48 { live.append(Tensor(uninitialized: [1 << 18])) }
        live.removeAll()
        return TensorMemory.threadStatistics.cachedBytes
    }
    #expect(kept <= TensorMemory.threadCacheLimit && kept >= TensorMemory.threadCacheLimit - (1 << 20), "kept \(kept)")
    #expect(stats.ownCacheMisses == 48, "\(stats)")
}

@Test func scratchIsReusedAndAligned() throws {
    let (aligned, stats) = try TensorMemory.measuredOnNewThread { () -> Bool in
        var aligned = true
        for n in [1, 1000, 4096, 1000] {
            TensorMemory.withScratch(byteCount: n) { p in
                aligned = aligned && Int(bitPattern: p) % 64 == 0
                p.initializeMemory(as: UInt8.self, repeating: 0xAB, count: n)
            }
        }
        return aligned
    }
    #expect(aligned)
    #expect(stats.ownCacheMisses == 3 && ownHits(stats) == 1, "\(stats)")
}

/// Threads allocating, writing, checking and freeing blocks of many sizes at once, some freed on
/// another thread than the one that allocated them: no block is ever handed out twice.
@Test func concurrentUseKeepsBlocksApart() async throws {
    final class HandOff: @unchecked Sendable {
        let lock = NSLock()
        var pending: [(Tensor, Float)] = []
        func swap(_ t: Tensor, _ mark: Float) -> (Tensor, Float)? {
            lock.lock()
            defer { lock.unlock() }
            pending.append((t, mark))
            return pending.count > 8 ? pending.removeFirst() : nil
        }
    }
    let handOff = HandOff()
    await withTaskGroup(of: Bool.self) { group in
        for worker in 0..<4 {
            group.addTask {
                var ok = true
                var rng = UInt64(worker + 1)
                for round in 0..<2000 {
                    rng = rng &* 6364136223846793005 &+ 1442695040888963407
                    let n = 1 + Int(rng >> 40) % 5000
                    var t = Tensor(uninitialized: [n])
                    let mark = Float(worker * 100_000 + round)
                    t.withMutableFloats { for i in $0.indices { $0[i] = mark } }
                    if round % 7 == 0 { await Task.yield() }  // others allocate and write meanwhile
                    ok = ok && t.withFloats { $0.allSatisfy { $0 == mark } }
                    if round % 5 == 0, let (other, otherMark) = handOff.swap(t, mark) {
                        // Another task's tensor: still intact, then freed here (maybe another thread).
                        ok = ok && other.withFloats { $0.allSatisfy { $0 == otherMark } }
                    }
                }
                return ok
            }
        }
        for await ok in group { #expect(ok) }
    }
}

@Test func blocksUnusedForAnIntervalDecay() throws {
    // Two classes cached; over the next interval only one is used: the other goes back to the
    // system when the interval ends, and the used one when an interval passes without it.
    let (cached, stats) = try TensorMemory.measuredOnNewThread { () -> [Int] in
        do {
            _ = Tensor(uninitialized: [1000])  // 4000 bytes: the 4096-byte class
            _ = Tensor(uninitialized: [3000])  // 12000 bytes: the 12288-byte class
        }
        TensorMemory.decayNow()  // both were just used: nothing goes; the interval starts
        var cached = [TensorMemory.threadStatistics.cachedBytes]
        for _ in 0..<5 { _ = Tensor(uninitialized: [1000]) }
        TensorMemory.decayNow()
        cached.append(TensorMemory.threadStatistics.cachedBytes)
        TensorMemory.decayNow()
        cached.append(TensorMemory.threadStatistics.cachedBytes)
        return cached
    }
    #expect(cached == [4096 + 12288, 4096, 0], "\(cached)")
    // The two first blocks come from the system or from the shared pool (other tests running in
    // parallel may have left blocks of these classes there); the rest from this thread's cache.
    #expect(stats.decayedFrees == 2 && stats.systemFrees == 2 && stats.ownCacheMisses == 2, "\(stats)")
}
