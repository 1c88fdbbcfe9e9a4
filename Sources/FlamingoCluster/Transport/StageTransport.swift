import Foundation

/// Moves messages between the ranks of a pipeline. Sends never block the caller; receives wait
/// at most until a deadline. A message sent to one's own rank is delivered through the inbox
/// like any other, so one process can hold several stages.
public protocol StageTransport: AnyObject, Sendable {
    var rank: Int { get }
    var worldSize: Int { get }
    /// Queues `message` for `rank`.
    func send(_ message: Message, to rank: Int) throws(TransportError)
    /// The next message for this rank, or nil when `timeout` passes first. Throws when a peer
    /// has failed (died, stalled, or sent an invalid frame).
    func receive(timeout: Duration) throws(TransportError) -> Message?
    /// Makes a pending `receive` on this rank return early (new work arrived from another thread).
    func wake()
    /// Waits until queued sends have left (best effort, bounded), for a clean shutdown.
    func flush(timeout: Duration)
    /// Ends every rank of the job now (after an unrecoverable error).
    func abortJob(code: Int32) -> Never
    /// Byte and time counters, for --stats.
    var counters: TransportCounters { get }
    /// Tensor-parallel partial sums: raw bytes on a channel of their own, in order per peer.
    func sendCollective(_ bytes: [UInt8], to rank: Int) throws(TransportError)
    /// The next partial from `rank`, or nil when `timeout` passes first.
    func receiveCollective(from rank: Int, timeout: Duration) throws(TransportError) -> [UInt8]?
}

public struct TransportCounters: Sendable, Equatable {
    public var bytesSent = 0
    public var bytesReceived = 0
    public var messagesSent = 0
    public var messagesReceived = 0
    public init() {}
}

public enum TransportError: Error, LocalizedError, Equatable {
    case mpi(call: String, code: Int32)
    case peerSilent(rank: Int, seconds: Double)
    case badFrame(from: Int, reason: String)
    case peerFailed(rank: Int, message: String)
    case closed
    case badConfiguration(String)

    public var errorDescription: String? {
        switch self {
        case .mpi(let call, let code): "\(call) failed with MPI error \(code)"
        case .peerSilent(let rank, let seconds):
            "rank \(rank) stopped responding (nothing heard for \(String(format: "%.0f", seconds)) s): it died or stalled"
        case .badFrame(let from, let reason): "invalid frame from rank \(from): \(reason)"
        case .peerFailed(let rank, let message): "rank \(rank) failed: \(message)"
        case .closed: "transport closed"
        case .badConfiguration(let why): why
        }
    }
}

/// A thread-safe FIFO with a timed wait.
final class Inbox<Element>: @unchecked Sendable {
    // A popped slot is emptied at once (a message holds activation tensors; keeping up to a
    // thousand consumed ones alive until the next compaction held their memory), and the consumed
    // prefix is dropped when the queue empties or is most of the array.
    private var items: [Element?] = []
    private var head = 0
    private let condition = NSCondition()

    func push(_ item: Element) {
        condition.lock()
        items.append(item)
        condition.signal()
        condition.unlock()
    }

    func pop(timeout: Duration) -> Element? {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) * 1e-18)
        condition.lock()
        defer { condition.unlock() }
        while head == items.count {
            if !condition.wait(until: deadline) { break }
        }
        guard head < items.count else { return nil }
        let item = items[head].take()
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    var isEmpty: Bool {
        condition.lock()
        defer { condition.unlock() }
        return head == items.count
    }
}
