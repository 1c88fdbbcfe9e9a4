import FlamingoCore
import FlamingoModel
import Foundation

extension RankStats {
    /// This rank's figures now.
    static func current(rank: Int, assignment: StageAssignment, worker: StageWorker, transport: StageTransport,
                        started: ContinuousClock.Instant) -> RankStats {
        let total = (ContinuousClock.now - started).seconds
        let compute = worker.computeTime.seconds
        let c = transport.counters
        return RankStats(rank: UInt32(rank), role: assignment.role,
                         layerStart: UInt32(assignment.layers.lowerBound), layerEnd: UInt32(assignment.layers.upperBound),
                         weightBytes: UInt64(worker.model.weightBytes), peakRSSBytes: UInt64(ProcessMemory.peakResidentBytes),
                         computeSeconds: compute, waitSeconds: max(0, total - compute),
                         bytesSent: UInt64(c.bytesSent), bytesReceived: UInt64(c.bytesReceived),
                         cacheBytes: UInt64(worker.peakCacheBytes))
    }
}

/// Peak resident memory of this process (VmHWM in /proc/self/status).
public enum ProcessMemory {
    public static var peakResidentBytes: Int { field("VmHWM") }
    public static var residentBytes: Int { field("VmRSS") }

    private static func field(_ name: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
