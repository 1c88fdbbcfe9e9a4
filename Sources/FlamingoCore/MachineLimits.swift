import Foundation

/// This machine's ceilings, measured in the same run as a benchmark so speeds can be read as a
/// fraction of what the hardware allows.
public struct MachineLimits: Sendable {
    /// Best of several parallel sums over a 1 GiB buffer.
    public let memoryReadGBps: Double
    /// Best of several 1024³ f32 matrix products through our blocked, threaded sgemm path.
    public let sgemmGFLOPS: Double

    public static func measure() -> MachineLimits {
        let count = 1 << 28  // 1 GiB of f32
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        parallelFor(count, minChunk: 1 << 20) { r in for i in r { buffer[i] = Float(i & 7) } }
        var bestRead = 0.0
        for _ in 0..<3 {
            let start = Date()
            let partial = UnsafeMutablePointer<Float>.allocate(capacity: 64)
            partial.initialize(repeating: 0, count: 64)
            let chunks = 64
            parallelFor(chunks) { r in
                for c in r {
                    var acc = SIMD16<Float>(repeating: 0)
                    let base = UnsafeRawPointer(buffer + c * (count / chunks))
                    for i in stride(from: 0, to: count / chunks, by: 16) {
                        acc += base.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                    }
                    partial[c] = acc.sum()
                }
            }
            let seconds = Date().timeIntervalSince(start)
            if partial[0] == -1 { print("") }  // keep the sum alive
            partial.deallocate()
            bestRead = max(bestRead, Double(count * 4) / seconds / 1e9)
        }
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
}
