import Foundation
import Synchronization

/// Ranks that are threads (or just one rank) of one process: messages go straight into the
/// receiver's inbox. With `encodeFrames`, every message makes the round trip through the wire
/// encoder and decoder, so tests exercise exactly what MPI would carry.
public final class InProcessTransport: StageTransport, @unchecked Sendable {
    public let rank: Int
    public var worldSize: Int { hub.inboxes.count }
    private let hub: Hub
    private let stats = Mutex(TransportCounters())

    final class Hub: @unchecked Sendable {
        /// Messages with the size of their frame (0 when frames are not encoded).
        let inboxes: [Inbox<Result<(Message, Int), TransportError>>]
        let encodeFrames: Bool
        let collectives: [CollectiveInbox]
        init(worldSize: Int, encodeFrames: Bool) {
            inboxes = (0..<worldSize).map { _ in Inbox() }
            collectives = (0..<worldSize).map { _ in CollectiveInbox() }
            self.encodeFrames = encodeFrames
        }
    }

    /// One transport per rank, all connected.
    public static func connected(worldSize: Int, encodeFrames: Bool = true) -> [InProcessTransport] {
        let hub = Hub(worldSize: worldSize, encodeFrames: encodeFrames)
        return (0..<worldSize).map { InProcessTransport(rank: $0, hub: hub) }
    }

    /// A single-rank transport: the whole pipeline in this process.
    public convenience init() {
        self.init(rank: 0, hub: Hub(worldSize: 1, encodeFrames: false))
    }

    private init(rank: Int, hub: Hub) {
        self.rank = rank
        self.hub = hub
    }

    public func send(_ message: Message, to target: Int) throws(TransportError) {
        var message = message
        message.sourceRank = UInt32(rank)
        if hub.encodeFrames {
            let bytes: [UInt8]
            do { bytes = try encodeFrame(message) } catch { throw .badFrame(from: rank, reason: error.localizedDescription) }
            stats.withLock { $0.bytesSent += bytes.count; $0.messagesSent += 1 }
            do {
                hub.inboxes[target].push(.success((try decodeFrame(bytes), bytes.count)))
            } catch {
                hub.inboxes[target].push(.failure(.badFrame(from: rank, reason: error.localizedDescription)))
            }
        } else {
            stats.withLock { $0.messagesSent += 1 }
            hub.inboxes[target].push(.success((message, 0)))
        }
    }

    public func receive(timeout: Duration) throws(TransportError) -> Message? {
        guard let next = hub.inboxes[rank].pop(timeout: timeout) else { return nil }
        let (message, bytes) = try next.get()
        stats.withLock { $0.messagesReceived += 1; $0.bytesReceived += bytes }
        return message
    }

    public func flush(timeout: Duration) {}

    public func wake() { hub.inboxes[rank].push(.success((Message(kind: .heartbeat, sourceRank: UInt32(rank)), 0))) }

    public func abortJob(code: Int32) -> Never { exit(code) }

    public var counters: TransportCounters { stats.withLock { $0 } }

    public func sendCollective(_ bytes: [UInt8], to target: Int) throws(TransportError) {
        stats.withLock { $0.bytesSent += bytes.count; $0.messagesSent += 1 }
        hub.collectives[target].push(bytes, from: rank)
    }

    public func receiveCollective(from source: Int, timeout: Duration) throws(TransportError) -> [UInt8]? {
        guard let bytes = hub.collectives[rank].pop(from: source, timeout: timeout) else { return nil }
        stats.withLock { $0.bytesReceived += bytes.count; $0.messagesReceived += 1 }
        return bytes
    }
}
