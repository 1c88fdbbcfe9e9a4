import FlamingoCore
import Foundation

/// Measures the link between rank 0 and the other ranks through the pipeline's own transport
/// (real frames: protobuf envelope, CRC, a tensor of the given size): a ping-pong per size; the
/// smallest size's half round trip is the latency, the largest size's the bandwidth.
public enum LinkProfile {
    /// Rank 0: ping-pongs with every other rank, then tells them to stop.
    public static func measure(transport: StageTransport, sizes: [Int] = [64, 4096, 262_144, 4 << 20],
                               repeats: Int = 5, log: (String) -> Void = { _ in }) throws -> LinkCost? {
        defer {
            for r in 1..<max(1, transport.worldSize) { try? transport.send(Message(kind: .shutdown), to: r) }
            transport.flush(timeout: .seconds(5))
        }
        guard transport.worldSize > 1 else { return nil }
        var halfTrips: [Int: [Double]] = [:]
        for peer in 1..<transport.worldSize {
            log("link rank 0 <-> rank \(peer): ping-pong at \(sizes.map(String.init).joined(separator: ", ")) bytes...")
            for size in sizes {
                var message = Message(kind: .decode)
                message.tensors = [NamedTensor(Message.TensorName.hidden, Tensor(Array(repeating: 0.5, count: max(1, size / 4)), shape: [max(1, size / 4)]))]
                var trips: [Double] = []
                for i in 0...repeats {
                    let start = ContinuousClock.now
                    try transport.send(message, to: peer)
                    guard let back = try transport.receive(timeout: .seconds(30)), back.kind == .decode else {
                        throw CalibrationError("rank \(peer) did not answer the link probe within 30 s")
                    }
                    if i > 0 { trips.append((ContinuousClock.now - start).seconds / 2) }  // the first warms up
                }
                halfTrips[size, default: []].append(trips.sorted()[trips.count / 2])
            }
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let small = sizes.min()!, large = sizes.max()!
        let latency = median(halfTrips[small]!)
        let transfer = max(1e-9, median(halfTrips[large]!) - latency)
        return LinkCost(latencySeconds: latency, bytesPerSecond: Double(large - small) / transfer)
    }

    /// The other ranks: answer every probe until rank 0 says stop.
    public static func answer(transport: StageTransport) throws {
        while true {
            guard let m = try transport.receive(timeout: .seconds(600)) else {
                throw CalibrationError("rank 0 sent nothing for 600 s during profiling")
            }
            switch m.kind {
            case .shutdown: return
            case .decode: try transport.send(m, to: 0)
            default: continue
            }
        }
    }

    /// Every rank, after the ping-pongs: the tensor-parallel allreduce (`TensorParallelGroup`) over
    /// ranks 0..<n for n = 2...world, at each size; the median of 5 after one warm-up. Every rank
    /// runs the same sequence (ranks outside a group skip it), so the groups meet in step. Rank 0
    /// gets the figures.
    public static func measureAllreduce(transport: StageTransport, sizes: [Int] = [8192, 65536, 524_288, 4 << 20],
                                        log: (String) -> Void = { _ in }) throws -> [LinkCost.AllreducePoint] {
        guard transport.worldSize > 1 else { return [] }
        var points: [LinkCost.AllreducePoint] = []
        for n in 2...transport.worldSize {
            guard transport.rank < n else { continue }
            if transport.rank == 0 { log("allreduce over ranks 0-\(n - 1) at \(sizes.map(String.init).joined(separator: ", ")) bytes...") }
            let group = TensorParallelGroup(ranks: Array(0..<n), ownRank: transport.rank, transport: transport, timeout: .seconds(60))
            for size in sizes {
                let partial = Tensor(Array(repeating: 0.25, count: max(1, size / 4)), shape: [max(1, size / 4)])
                var times: [Double] = []
                for i in 0...5 {
                    let start = ContinuousClock.now
                    _ = try group.allReduceSum(partial)
                    if i > 0 { times.append((ContinuousClock.now - start).seconds) }
                }
                points.append(.init(ranks: n, bytes: size, seconds: times.sorted()[times.count / 2]))
            }
        }
        return points
    }
}
