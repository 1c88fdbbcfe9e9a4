import CKernels
import Foundation

/// This machine's ceilings, measured in the same run as a benchmark so speeds can be read as a
/// fraction of what the hardware allows (probes in CKernels/include/flamingo_probes.h).
public struct MachineLimits: Sendable {
    /// Best of several parallel sums over a 1 GiB buffer.
    public let memoryReadGBps: Double
    /// Best of several 1024³ f32 matrix products through our blocked, threaded sgemm path.
    public let sgemmGFLOPS: Double

    public static func measure() -> MachineLimits {
        let read = ReadProbe()
        let bestRead = read.measure()
        let n = 1024
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        var bestFlops = 0.0
        for _ in 0..<3 {
            let start = Date()
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    c.withUnsafeMutableBufferPointer { cp in
                        let bp0 = bp.baseAddress!, ap0 = ap.baseAddress!, cp0 = cp.baseAddress!
                        forEachOutputBlock(n) { j0, rows in
                            sgemmNT(out: cp0 + j0, a: ap0, b: bp0 + j0 * n, m: n, n: rows, k: n, ldc: n)
                        }
                    }
                }
            }
            bestFlops = max(bestFlops, 2 * Double(n * n * n) / Date().timeIntervalSince(start) / 1e9)
        }
        return MachineLimits(memoryReadGBps: bestRead, sgemmGFLOPS: bestFlops)
    }

    /// Operations per second (GFLOP/s or GOP/s, a multiply-accumulate counting two) of one
    /// instruction on every compute thread at once: best of `repeats` runs of about 0.1 s.
    public static func instructionPeak(_ which: fk_peak_instruction, repeats: Int = 3) -> Double {
        let threads = ComputeThreads.count
        let iterations = 4_000_000
        var best = 0.0
        for _ in 0..<repeats {
            let start = Date()
            parallelFor(threads) { range in
                for _ in range where fk_probe_peak(which, iterations) == -1 { print("") }
            }
            let ops = Double(threads) * Double(iterations) * 16 * Double(fk_probe_peak_ops(which))
            best = max(best, ops / Date().timeIntervalSince(start) / 1e9)
        }
        return best
    }
}

/// The memory-read bandwidth every compute thread together gets from a buffer much larger than
/// the caches, with the widest loads the CPU has. Keeps its buffer, so it can be measured again
/// right next to each benchmark it is compared with.
public final class ReadProbe: @unchecked Sendable {
    public let bytes: Int
    private let buffer: UnsafeMutableRawPointer
    private let level: Int32

    public init(bytes: Int = 1 << 30, cpu: CPUFeatures = .current) {
        self.bytes = bytes / 4096 * 4096
        buffer = UnsafeMutableRawPointer.allocate(byteCount: self.bytes, alignment: 4096)
        level = cpu.hasAVX512 ? 2 : cpu.hasAVX2 ? 1 : 0
        let floats = buffer.bindMemory(to: Float.self, capacity: self.bytes / 4)
        let count = self.bytes / 4
        let f = UncheckedSendable(floats)
        parallelFor(count, minChunk: 1 << 20) { r in for i in r { f.value[i] = Float(i & 7) } }
    }

    deinit { buffer.deallocate() }

    /// GB/s (10⁹ bytes): best of `repeats` passes over the whole buffer.
    public func measure(repeats: Int = 3) -> Double {
        let chunks = 64
        let chunk = bytes / chunks / 64 * 64
        let base = UncheckedSendable(UnsafeRawPointer(buffer))
        let level = self.level
        var best = 0.0
        for _ in 0..<repeats {
            let start = Date()
            var sink: Float = 0
            let partial = UnsafeMutablePointer<Float>.allocate(capacity: chunks)
            let p = UncheckedSendable(partial)
            parallelFor(chunks) { r in
                for c in r { p.value[c] = fk_probe_read(base.value + c * chunk, chunk, level) }
            }
            let seconds = Date().timeIntervalSince(start)
            for c in 0..<chunks { sink += partial[c] }
            partial.deallocate()
            if sink == -1 { print("") }  // keep the sums alive
            best = max(best, Double(chunk * chunks) / seconds / 1e9)
        }
        return best
    }
}

extension MachineLimits {
    /// The memory limit of this process's control group (cgroup v2 `memory.max`, or v1
    /// `memory.limit_in_bytes`, the smallest along the path up to the root), nil when unlimited
    /// or unknown. A container, a Slurm job or `cluster/netns-launch.sh --mem-cap` sets one.
    public static func controlGroupMemoryLimit() -> Int? {
        guard let table = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        var limits: [Int] = []
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 3 else { continue }
            let (controllers, path) = (fields[1], fields[2])
            let (root, file): (String, String)
            if controllers.split(separator: ",").contains("memory") {
                (root, file) = ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
            } else if controllers.isEmpty {
                (root, file) = ("/sys/fs/cgroup", "memory.max")
            } else {
                continue
            }
            var dir = path
            while true {
                let text = (try? String(contentsOfFile: root + dir + "/" + file, encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                // "max" (v2) and values near Int64.max (v1) mean no limit.
                if let text, let value = Int(text), value > 0, value < 1 << 60 { limits.append(value) }
                guard dir != "/" && !dir.isEmpty else { break }
                dir = (dir as NSString).deletingLastPathComponent
            }
        }
        return limits.min()
    }
}

