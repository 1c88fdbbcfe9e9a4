import FlamingoCore
import FlamingoModel
import Foundation

// The allreduce of a tensor-parallel stage: every rank of the group sends its partial sums to
// every other (raw f32, on a channel of its own, apart from pipeline messages), then adds all the
// partials in group rank order. Every rank adds the same numbers in the same order, so every rank
// gets the same bits, and a repeated run of the same layout gets them again.

/// One partial sum on the collective channel: which allreduce of the group it belongs to (a
/// counter every rank advances in step), and the values.
struct CollectivePart: Sendable {
    var sequence: UInt64
    var values: [Float]

    /// [sequence: 8 bytes little-endian][values: f32 little-endian].
    var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 8 + 4 * values.count)
        withUnsafeBytes(of: sequence.littleEndian) { out.replaceSubrange(0..<8, with: $0) }
        values.withUnsafeBytes { out.replaceSubrange(8..<out.count, with: $0) }
        return out
    }

    init(sequence: UInt64, values: [Float]) {
        self.sequence = sequence
        self.values = values
    }

    init?(bytes: [UInt8]) {
        guard bytes.count >= 8, (bytes.count - 8) % 4 == 0 else { return nil }
        sequence = bytes[0..<8].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        values = [Float](repeating: 0, count: (bytes.count - 8) / 4)
        values.withUnsafeMutableBytes { dst in bytes[8...].withUnsafeBytes { dst.copyMemory(from: $0) } }
    }
}

/// Partials received, per source rank, in arrival order (a peer's partials arrive in the order it sent them).
final class CollectiveInbox: @unchecked Sendable {
    private var parts: [Int: [[UInt8]]] = [:]
    private let condition = NSCondition()

    func push(_ bytes: [UInt8], from source: Int) {
        condition.lock()
        parts[source, default: []].append(bytes)
        condition.broadcast()
        condition.unlock()
    }

    /// The next partial from `source`, or nil after `timeout`.
    func pop(from source: Int, timeout: Duration) -> [UInt8]? {
        let deadline = Date().addingTimeInterval(timeout.seconds)
        condition.lock()
        defer { condition.unlock() }
        while parts[source]?.isEmpty ?? true {
            if !condition.wait(until: deadline) { break }
        }
        guard var list = parts[source], !list.isEmpty else { return nil }
        let first = list.removeFirst()
        parts[source] = list
        return first
    }
}

/// This rank's tensor-parallel group over a transport: the communicator a `TensorShard` calls.
public final class TensorParallelGroup: TensorParallelCommunicator, @unchecked Sendable {
    /// The group's ranks in group order (the stage's leader first).
    public let ranks: [Int]
    public let ownRank: Int
    private let transport: StageTransport
    private let timeout: Duration
    private var sequence: UInt64 = 0  // only the stage's compute thread calls allReduceSum

    public init(ranks: [Int], ownRank: Int, transport: StageTransport, timeout: Duration = .seconds(60)) {
        precondition(ranks.contains(ownRank), "rank \(ownRank) is not in its group \(ranks)")
        self.ranks = ranks
        self.ownRank = ownRank
        self.transport = transport
        self.timeout = timeout
    }

    public var shard: TensorShard { TensorShard(rank: ranks.firstIndex(of: ownRank)!, count: ranks.count, communicator: self) }

    public func allReduceSum(_ partial: Tensor) throws -> Tensor {
        sequence += 1
        let own = partial.toF32()
        let values = own.scalars
        for peer in ranks where peer != ownRank {
            try transport.sendCollective(CollectivePart(sequence: sequence, values: values).bytes, to: peer)
        }
        var sum = [Float](repeating: 0, count: values.count)
        for (index, peer) in ranks.enumerated() {
            let part: [Float]
            if peer == ownRank {
                part = values
            } else {
                guard let bytes = try transport.receiveCollective(from: peer, timeout: timeout) else {
                    throw TransportError.peerSilent(rank: peer, seconds: timeout.seconds)
                }
                guard let p = CollectivePart(bytes: bytes), p.sequence == sequence, p.values.count == values.count else {
                    throw TransportError.badFrame(from: peer, reason: "tensor-parallel partial sum \(sequence) of \(values.count) values expected")
                }
                part = p.values
            }
            // In group order: the first partial is copied, the others added (same on every rank).
            if index == 0 {
                sum = part
            } else {
                for i in 0..<sum.count { sum[i] += part[i] }
            }
        }
        return Tensor(sum, shape: partial.shape)
    }
}
