#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// One thread's result handed to another (written before a semaphore signal, read after the wait).
private final class ResultBox<T>: @unchecked Sendable { var result: Result<T, Error>? }

/// The caching allocator behind owned tensor memory (`TensorStorage`) and the kernels' scratch
/// (`withScratch`): a decode step runs hundreds of ops whose outputs and scratch have the same
/// sizes step after step, so freed blocks are kept on free lists by size class and handed out
/// again instead of going back to the system (PyTorch's CPU caching allocator and llama.cpp's graph
/// allocator reuse buffers the same way).
///
/// Two levels:
/// - each thread's own cache, used without a lock: a block freed on a thread goes to that thread's
///   cache, and an allocation looks there first. Decode allocates and frees on one thread, so it is
///   served from its own cache whatever other threads do (and the kernels take their scratch on
///   the calling thread before they fan out over the compute threads);
/// - one shared pool behind a `Mutex`: what a thread's cache has no room for, and what it holds
///   when the thread ends; allocations a thread's cache cannot serve look there next.
///
/// Size classes: 64 bytes, then four classes per power of two (80, 96, 112, 128, 160, ...), so a
/// block is at most 25% larger than asked for. Blocks are 64-byte aligned.
///
/// Bounds (so serving many different shapes cannot grow memory without limit):
/// - blocks larger than `largestCachedBlock` are never cached: they come from the system and go
///   straight back to it (long prompts; their ops cost far more than the allocation);
/// - a thread's cache keeps at most `threadCacheLimit` bytes, the shared pool at most
///   `sharedCacheLimit`; a freed block that fits in neither goes back to the system.
/// So cached memory never exceeds `sharedCacheLimit` + `threadCacheLimit` per thread that frees
/// tensors. Mapped (borrowed) storage never comes here.
///
/// Decay (so a cache holds what the recent work uses, not everything it ever used): every
/// `decayInterval` each cache gives back to the system the blocks that sat unused on its free lists
/// for the whole interval, i.e. each class's low-water mark of free blocks (tcmalloc scavenges its
/// thread caches by the same mark; jemalloc decays unused dirty pages over 10 s). A server that
/// meets many prompt lengths would otherwise fill its caches with blocks of sizes it met once:
/// under the 10-minute soak the ranks of the demo model grew 14-30% that way. A thread's cache
/// decays when the thread frees a block after the interval has passed; the shared pool decays at
/// the same moments.
public enum TensorMemory {
    /// Blocks larger than this always come from and go back to the system.
    public static let largestCachedBlock = 16 << 20
    /// Bytes one thread's cache may hold.
    public static let threadCacheLimit = 32 << 20
    /// Bytes the shared pool may hold.
    public static let sharedCacheLimit = 64 << 20
    /// How long a free block may sit unused in a cache before it goes back to the system.
    public static let decayInterval: UInt64 = 10_000_000_000  // nanoseconds

    /// Allocation counters, process-wide (`statistics`) or of the calling thread (`threadStatistics`).
    public struct Statistics: Sendable, Equatable, CustomStringConvertible {
        /// Blocks taken from the system: allocations no cache could serve (cache misses), blocks
        /// too large to cache included.
        public var systemAllocations = 0
        /// Allocations served from a cache (the thread's own or the shared pool).
        public var cacheHits = 0
        /// Of `cacheHits`, those served by the shared pool rather than the thread's own cache.
        public var sharedCacheHits = 0
        /// Blocks given back to the system (too large to cache, or no room in any cache).
        public var systemFrees = 0
        /// Of `systemFrees`, the blocks given back because they sat unused in a cache for a whole
        /// `decayInterval`.
        public var decayedFrees = 0
        /// Bytes now held by the caches (by this thread's cache for `threadStatistics`).
        public var cachedBytes = 0

        public init() {}

        /// Allocations the thread's own cache could not serve: a thread's figure depends only on
        /// what that thread allocated and freed, not on other threads.
        public var ownCacheMisses: Int { systemAllocations + sharedCacheHits }

        /// Counts between two snapshots (`cachedBytes` is the later one's).
        public static func - (later: Statistics, earlier: Statistics) -> Statistics {
            var d = Statistics()
            d.systemAllocations = later.systemAllocations - earlier.systemAllocations
            d.cacheHits = later.cacheHits - earlier.cacheHits
            d.sharedCacheHits = later.sharedCacheHits - earlier.sharedCacheHits
            d.systemFrees = later.systemFrees - earlier.systemFrees
            d.decayedFrees = later.decayedFrees - earlier.decayedFrees
            d.cachedBytes = later.cachedBytes
            return d
        }

        public var description: String {
            "system allocations \(systemAllocations), cache hits \(cacheHits) (shared \(sharedCacheHits)), "
                + "system frees \(systemFrees) (decayed \(decayedFrees)), cached \(cachedBytes) bytes"
        }
    }

    /// Counters of the whole process.
    public static var statistics: Statistics {
        var s = Statistics()
        s.systemAllocations = Counters.systemAllocations.load(ordering: .relaxed)
        s.cacheHits = Counters.cacheHits.load(ordering: .relaxed)
        s.sharedCacheHits = Counters.sharedCacheHits.load(ordering: .relaxed)
        s.systemFrees = Counters.systemFrees.load(ordering: .relaxed)
        s.decayedFrees = Counters.decayedFrees.load(ordering: .relaxed)
        s.cachedBytes = Counters.cachedBytes.load(ordering: .relaxed)
        return s
    }

    /// Counters of the calling thread: its allocations and frees, and its own cache's bytes.
    public static var threadStatistics: Statistics {
        let cache = ThreadCache.current
        var s = cache.statistics
        s.cachedBytes = cache.cachedBytes
        return s
    }

    /// Runs `body` on a new thread and returns its result with that thread's counters at the end.
    /// The new thread's cache starts empty and no other thread touches it, so the counters are
    /// exactly what `body` asked of the allocator on its own thread (tests and diagnostics: "does a
    /// decode step allocate?").
    public static func measuredOnNewThread<R>(_ body: @escaping @Sendable () throws -> R) throws -> (R, Statistics) {
        let box = ResultBox<(R, Statistics)>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            box.result = Result { (try body(), TensorMemory.threadStatistics) }
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
        done.wait()
        return try box.result!.get()
    }

    /// `body` gets at least `byteCount` bytes of uninitialized, 64-byte aligned scratch, taken from
    /// the caches and returned to them afterwards. The memory must not escape `body`; other threads
    /// may use it while `body` runs (e.g. the chunks of a `parallelFor`).
    @inline(__always)
    public static func withScratch<R>(byteCount: Int, _ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        let block = allocate(byteCount: byteCount, zeroed: false)
        defer { release(block, byteCount: byteCount) }
        return try body(block)
    }

    /// A 64-byte aligned block of at least `byteCount` bytes; its first `byteCount` bytes are zero
    /// when `zeroed`. Give it back with `release(_:byteCount:)` and the same `byteCount`.
    static func allocate(byteCount: Int, zeroed: Bool) -> UnsafeMutableRawPointer {
        let n = max(byteCount, 1)
        let block: UnsafeMutableRawPointer
        if n > largestCachedBlock {
            block = systemAllocate(n, cache: ThreadCache.current)
        } else {
            let c = SizeClass(n)
            let cache = ThreadCache.current
            if let b = cache.pop(c) {
                block = b
                cache.statistics.cacheHits += 1
                Counters.cacheHits.add(1, ordering: .relaxed)
            } else if let b = shared.withLock({ $0.pop(c) }) {
                block = b
                cache.statistics.cacheHits += 1
                cache.statistics.sharedCacheHits += 1
                Counters.cacheHits.add(1, ordering: .relaxed)
                Counters.sharedCacheHits.add(1, ordering: .relaxed)
            } else {
                block = systemAllocate(c.bytes, cache: cache)
            }
        }
        if zeroed { block.initializeMemory(as: UInt8.self, repeating: 0, count: n) }
        return block
    }

    /// Gives back a block from `allocate` (same `byteCount`): to this thread's cache, else the
    /// shared pool, else the system (the bounds above).
    static func release(_ block: UnsafeMutableRawPointer, byteCount: Int) {
        let n = max(byteCount, 1)
        let cache = ThreadCache.current
        if n <= largestCachedBlock {
            let c = SizeClass(n)
            if cache.cachedBytes + c.bytes <= threadCacheLimit {
                cache.push(block, c)
                cache.decayIfDue()
                return
            }
            let address = UInt(bitPattern: block)  // a pointer is not Sendable; its address is
            if shared.withLock({ $0.push(address: address, c) }) { return }
        }
        block.deallocate()
        cache.statistics.systemFrees += 1
        Counters.systemFrees.add(1, ordering: .relaxed)
    }

    /// Ends the calling thread's current decay interval now, and the shared pool's: the blocks that
    /// sat unused on their free lists since the last interval ended go back to the system (tests;
    /// the caches do this by themselves every `decayInterval`).
    public static func decayNow() {
        let now = DispatchTime.now().uptimeNanoseconds
        ThreadCache.current.decay(now: now)
        decaySharedPool(now: now, force: true)
    }

    /// The shared pool's decay, when its interval has passed (or `force`).
    static func decaySharedPool(now: UInt64, force: Bool) {
        shared.withLock { pool in
            guard force || now &- pool.lastDecay >= decayInterval else { return }
            pool.lastDecay = now
            pool.lists.decay { block, _ in
                block.deallocate()
                Counters.systemFrees.add(1, ordering: .relaxed)
                Counters.decayedFrees.add(1, ordering: .relaxed)
            }
        }
    }

    private static func systemAllocate(_ bytes: Int, cache: ThreadCache) -> UnsafeMutableRawPointer {
        cache.statistics.systemAllocations += 1
        Counters.systemAllocations.add(1, ordering: .relaxed)
        if bytes < hugePageBytes { return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
        let block = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: hugePageBytes)
        adviseHugePages(block, byteCount: bytes)
        return block
    }

    /// Blocks this large (owned weight matrices: synthetic, quantized at load) start on a 2 MiB
    /// boundary and are advised to be backed by transparent huge pages.
    static let hugePageBytes = 2 << 20

    // MARK: Size classes and free lists

    /// 64 bytes, then four classes per power of two: (q + 1) · 2^(e-2) for q in 4...7.
    struct SizeClass {
        let index: Int
        let bytes: Int

        @inline(__always)
        init(_ n: Int) {
            if n <= 64 {
                index = 0
                bytes = 64
                return
            }
            let b = n - 1
            let e = Int.bitWidth - 1 - b.leadingZeroBitCount  // >= 6
            let q = b >> (e - 2)  // 4...7
            bytes = (q + 1) << (e - 2)
            index = (e - 6) * 4 + (q - 4) + 1
        }

        static let count = SizeClass(TensorMemory.largestCachedBlock).index + 1
    }

    /// Free lists, one per size class. A free block holds the next block's address in its first
    /// bytes (every block is at least 64 bytes), so keeping a block costs no memory of its own.
    /// Each list also counts its blocks and the fewest it held since the last decay (its low-water
    /// mark): that many of its blocks went unused all along.
    struct FreeLists: ~Copyable {
        private let heads: UnsafeMutablePointer<UnsafeMutableRawPointer?>
        private let counts: UnsafeMutablePointer<Int>
        private let lowWater: UnsafeMutablePointer<Int>
        private(set) var cachedBytes = 0

        init() {
            heads = .allocate(capacity: SizeClass.count)
            heads.initialize(repeating: nil, count: SizeClass.count)
            counts = .allocate(capacity: SizeClass.count)
            counts.initialize(repeating: 0, count: SizeClass.count)
            lowWater = .allocate(capacity: SizeClass.count)
            lowWater.initialize(repeating: 0, count: SizeClass.count)
        }

        deinit {  // blocks still listed are the owner's to move first
            heads.deallocate()
            counts.deallocate()
            lowWater.deallocate()
        }

        @inline(__always)
        mutating func pop(_ c: SizeClass) -> UnsafeMutableRawPointer? {
            guard let block = heads[c.index] else { return nil }
            heads[c.index] = block.load(as: UnsafeMutableRawPointer?.self)
            counts[c.index] -= 1
            lowWater[c.index] = min(lowWater[c.index], counts[c.index])
            cachedBytes -= c.bytes
            Counters.cachedBytes.subtract(c.bytes, ordering: .relaxed)
            return block
        }

        @inline(__always)
        mutating func push(_ block: UnsafeMutableRawPointer, _ c: SizeClass) {
            block.storeBytes(of: heads[c.index], as: UnsafeMutableRawPointer?.self)
            heads[c.index] = block
            counts[c.index] += 1
            cachedBytes += c.bytes
            Counters.cachedBytes.add(c.bytes, ordering: .relaxed)
        }

        /// Removes each list's low-water mark of blocks (those unused since the last decay) and
        /// passes them to `body`; what remains is the next interval's starting mark.
        mutating func decay(_ body: (UnsafeMutableRawPointer, SizeClass) -> Void) {
            for i in 0..<SizeClass.count {
                let unused = min(lowWater[i], counts[i])
                if unused > 0 {
                    let c = SizeClass(index: i)
                    for _ in 0..<unused { body(pop(c)!, c) }
                }
                lowWater[i] = counts[i]
            }
        }

        /// Every block, emptying the lists.
        mutating func removeAll(_ body: (UnsafeMutableRawPointer, SizeClass) -> Void) {
            for i in 0..<SizeClass.count {
                while let block = heads[i] {
                    heads[i] = block.load(as: UnsafeMutableRawPointer?.self)
                    counts[i] -= 1
                    lowWater[i] = min(lowWater[i], counts[i])
                    let c = SizeClass(index: i)
                    cachedBytes -= c.bytes
                    Counters.cachedBytes.subtract(c.bytes, ordering: .relaxed)
                    body(block, c)
                }
            }
        }
    }

    struct SharedPool: ~Copyable {
        var lists = FreeLists()
        var lastDecay = DispatchTime.now().uptimeNanoseconds

        mutating func pop(_ c: SizeClass) -> UnsafeMutableRawPointer? { lists.pop(c) }

        /// Keeps the block at `address` if the pool has room for it.
        mutating func push(address: UInt, _ c: SizeClass) -> Bool {
            guard lists.cachedBytes + c.bytes <= TensorMemory.sharedCacheLimit else { return false }
            lists.push(UnsafeMutableRawPointer(bitPattern: address)!, c)
            return true
        }
    }

    private static let shared = Mutex(SharedPool())

    /// One thread's cache, reached through a pthread key (Swift has no thread-local storage of its
    /// own); only its thread touches it, so it needs no lock. When the thread ends, its blocks move
    /// to the shared pool (or back to the system when the pool is full).
    final class ThreadCache {
        var lists = FreeLists()
        var statistics = Statistics()
        var cachedBytes: Int { lists.cachedBytes }
        /// When this cache last decayed, and blocks pushed since the clock was last read (it is
        /// read once per 64 pushes: a decode step pushes hundreds).
        private var lastDecay = DispatchTime.now().uptimeNanoseconds
        private var pushesSinceClock = 0

        /// Decays this cache and the shared pool when `decayInterval` has passed.
        @inline(__always)
        func decayIfDue() {
            pushesSinceClock &+= 1
            guard pushesSinceClock & 63 == 0 else { return }
            let now = DispatchTime.now().uptimeNanoseconds
            guard now &- lastDecay >= TensorMemory.decayInterval else { return }
            decay(now: now)
            TensorMemory.decaySharedPool(now: now, force: false)
        }

        /// Gives back the blocks unused since the last decay.
        func decay(now: UInt64) {
            lastDecay = now
            lists.decay { block, _ in
                block.deallocate()
                statistics.systemFrees += 1
                statistics.decayedFrees += 1
                Counters.systemFrees.add(1, ordering: .relaxed)
                Counters.decayedFrees.add(1, ordering: .relaxed)
            }
        }

        @inline(__always)
        func pop(_ c: SizeClass) -> UnsafeMutableRawPointer? { lists.pop(c) }

        @inline(__always)
        func push(_ block: UnsafeMutableRawPointer, _ c: SizeClass) { lists.push(block, c) }

        deinit {
            lists.removeAll { block, c in
                let address = UInt(bitPattern: block)
                if !TensorMemory.shared.withLock({ $0.push(address: address, c) }) {
                    block.deallocate()
                    Counters.systemFrees.add(1, ordering: .relaxed)
                }
            }
        }

        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            let status = pthread_key_create(&key) { value in
                #if canImport(Darwin)
                Unmanaged<ThreadCache>.fromOpaque(value).release()
                #else
                if let value { Unmanaged<ThreadCache>.fromOpaque(value).release() }
                #endif
            }
            precondition(status == 0, "pthread_key_create failed: \(status)")
            return key
        }()

        /// The calling thread's cache (made on first use).
        static var current: ThreadCache {
            if let p = pthread_getspecific(key) {
                return Unmanaged<ThreadCache>.fromOpaque(p).takeUnretainedValue()
            }
            let cache = ThreadCache()
            pthread_setspecific(key, Unmanaged.passRetained(cache).toOpaque())
            return cache
        }
    }

    enum Counters {
        static let systemAllocations = Atomic<Int>(0)
        static let cacheHits = Atomic<Int>(0)
        static let sharedCacheHits = Atomic<Int>(0)
        static let systemFrees = Atomic<Int>(0)
        static let decayedFrees = Atomic<Int>(0)
        static let cachedBytes = Atomic<Int>(0)
    }
}

extension TensorMemory.SizeClass {
    /// The class with this index (the inverse of `init(_:)`).
    init(index: Int) {
        if index == 0 {
            self.init(64)
        } else {
            let e = (index - 1) / 4 + 6
            let q = (index - 1) % 4 + 4
            self.init((q + 1) << (e - 2))
        }
    }
}

/// Asks the kernel to back `[base, base + byteCount)` with transparent huge pages (a hint: a no-op
/// where THP is off or, for file mappings, where the filesystem has no large folios). Weights are
/// streamed once per token, and with 4 KiB pages every page of a weight row costs a TLB miss and
/// the hardware prefetcher stops at each page boundary: bf16 decode on the 8-layer bench checkpoint
/// streamed a median 1.15x faster with its mapping advised (6 interleaved rounds, AMD EPYC
/// avx512_bf16, Linux 6.18 ext4, THP mode `madvise`).
public func adviseHugePages(_ base: UnsafeRawPointer, byteCount: Int) {
    #if os(Linux)
    let page = 4096
    let start = (Int(bitPattern: base) + page - 1) & ~(page - 1)
    let end = (Int(bitPattern: base) + byteCount) & ~(page - 1)
    if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_HUGEPAGE) }
    #endif
}
