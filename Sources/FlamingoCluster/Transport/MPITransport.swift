import CMPI
import Foundation
import Synchronization

/// Stage transport over MPI: one MPI message = one frame. The only file that touches MPI.
///
/// A communication thread owns every MPI call after initialisation: it posts non-blocking sends,
/// probes and receives, and exchanges heartbeats (rank 0 with every rank), so compute overlaps
/// communication and a dead or stalled rank turns into an error within `peerTimeout` instead of
/// a hang.
public final class MPITransport: StageTransport, @unchecked Sendable {
    public let rank: Int
    public let worldSize: Int
    /// How long a peer may stay silent (no message, no heartbeat) before it counts as failed.
    public let peerTimeout: Duration
    private let heartbeatInterval: Duration = .milliseconds(500)
    private let tag: Int32 = 7
    /// Tensor-parallel partial sums (raw bytes), apart from pipeline frames.
    private let collectiveTag: Int32 = 8

    /// What the communication thread sends: a pipeline message (framed) or a partial sum (raw).
    private enum Outgoing {
        case message(Message)
        case collective([UInt8])
    }
    private let outbox = Mutex<[(target: Int, item: Outgoing)]>([])
    private let collectives = CollectiveInbox()
    /// Signalled by every send: the communication thread's idle wait ends at once (a message
    /// waits for the thread to post it, so an idle thread must not sleep through it).
    private let outgoing = DispatchSemaphore(value: 0)
    /// Longest idle wait between polls for incoming messages (MPI has no wake-up on arrival):
    /// a bound on the latency an idle rank adds to each message it receives.
    private static let longestIdleWait: UInt32 = 250
    private let inbox = Inbox<Result<Message, TransportError>>()
    private let stats = Mutex(TransportCounters())
    private let running = Atomic<Bool>(true)
    private let pendingSends = Atomic<Int>(0)
    private var thread: Thread?
    private let finished = NSCondition()
    private var threadDone = false

    /// True when this process was started by Open MPI's launcher (mpirun / srun with PMIx).
    public static var launchedByMPI: Bool {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil
            || ProcessInfo.processInfo.environment["PMIX_RANK"] != nil
    }

    /// Ranks on this node, to share its cores between them.
    public static var localRankCount: Int {
        Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
    }

    /// How f32 activations travel: exactly (f32, the default) or halved in size (bf16).
    public let floatEncoding: FloatEncoding

    /// Link emulation for scaling experiments: each message from another rank is handed on this
    /// long after it arrived (`FLAMINGO_LINK_DELAY_US`, microseconds; the kernel's netem is not
    /// available on every host, and tc can only shape rate). Zero unless set.
    public let linkDelay: Duration

    /// `FLAMINGO_LINK_DELAY_US` as a duration; a value that is not a non-negative integer is an error.
    public static func linkDelayFromEnvironment() throws(TransportError) -> Duration {
        guard let text = ProcessInfo.processInfo.environment["FLAMINGO_LINK_DELAY_US"], !text.isEmpty else { return .zero }
        guard let us = Int(text), us >= 0, us <= 10_000_000 else {
            throw .badConfiguration("FLAMINGO_LINK_DELAY_US='\(text)' is not a delay in microseconds (0...10000000)")
        }
        return .microseconds(us)
    }

    public init(peerTimeout: Duration = .seconds(15), floatEncoding: FloatEncoding = .f32) throws(TransportError) {
        self.floatEncoding = floatEncoding
        linkDelay = try Self.linkDelayFromEnvironment()
        var provided: Int32 = 0
        let rc = MPI_Init_thread(nil, nil, flamingo_mpi_thread_multiple(), &provided)
        guard rc == flamingo_mpi_success() else { throw .mpi(call: "MPI_Init_thread", code: rc) }
        guard provided >= flamingo_mpi_thread_serialized() else {
            throw .mpi(call: "MPI_Init_thread (needs MPI_THREAD_SERIALIZED or better)", code: provided)
        }
        MPI_Comm_set_errhandler(flamingo_comm_world(), flamingo_mpi_errors_return())
        var r: Int32 = 0, n: Int32 = 0
        MPI_Comm_rank(flamingo_comm_world(), &r)
        MPI_Comm_size(flamingo_comm_world(), &n)
        rank = Int(r)
        worldSize = Int(n)
        self.peerTimeout = peerTimeout
        let t = Thread { [unowned self] in self.communicate() }
        t.name = "mpi-comm"
        thread = t
        t.start()
    }

    public func send(_ message: Message, to target: Int) throws(TransportError) {
        guard running.load(ordering: .relaxed) else { throw .closed }
        var message = message
        message.sourceRank = UInt32(rank)
        if target == rank {
            // To this rank itself: straight into the inbox, without MPI (its self path costs a few
            // milliseconds per large message); through the encoder and decoder when the wire
            // rounds (bf16), so a stage sees the same values whichever rank sent them.
            if floatEncoding == .f32 {
                inbox.push(.success(message))
            } else {
                do { inbox.push(.success(try decodeFrame(try encodeFrame(message, floatEncoding: floatEncoding)))) } catch {
                    throw .badFrame(from: rank, reason: error.localizedDescription)
                }
            }
            return
        }
        pendingSends.add(1, ordering: .relaxed)
        outbox.withLock { $0.append((target, .message(message))) }
        outgoing.signal()
    }

    public func sendCollective(_ bytes: [UInt8], to target: Int) throws(TransportError) {
        guard running.load(ordering: .relaxed) else { throw .closed }
        pendingSends.add(1, ordering: .relaxed)
        outbox.withLock { $0.append((target, .collective(bytes))) }
        outgoing.signal()
    }

    public func receiveCollective(from source: Int, timeout: Duration) throws(TransportError) -> [UInt8]? {
        collectives.pop(from: source, timeout: timeout)
    }

    public func receive(timeout: Duration) throws(TransportError) -> Message? {
        guard let next = inbox.pop(timeout: timeout) else { return nil }
        return try next.get()
    }

    public func wake() { inbox.push(.success(Message(kind: .heartbeat, sourceRank: UInt32(rank)))) }

    public func flush(timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        while pendingSends.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline { usleep(1000) }
    }

    public func abortJob(code: Int32) -> Never {
        MPI_Abort(flamingo_comm_world(), code)
        exit(code)
    }

    public var counters: TransportCounters { stats.withLock { $0 } }

    /// Stops the communication thread and finalises MPI. Call once, after a clean shutdown.
    public func finalize() {
        flush(timeout: .seconds(5))
        running.store(false, ordering: .relaxed)
        finished.lock()
        while !threadDone { finished.wait() }
        finished.unlock()
        MPI_Finalize()
    }

    // MARK: - Communication thread

    private struct PendingSend {
        var request: MPI_Request?
        var buffer: UnsafeMutableRawBufferPointer
    }

    private func communicate() {
        var pending: [PendingSend] = []
        var lastHeard = [ContinuousClock.Instant](repeating: .now, count: worldSize)
        var lastHeartbeat = ContinuousClock.now - heartbeatInterval
        var idleSleep: UInt32 = 50
        var failed = false
        var framesSent = 0  // pipeline frames (not heartbeats), for FaultInjection
        // Messages held back by the emulated link delay, in arrival order (so due in order).
        enum Arrival { case message(Message), collective([UInt8], from: Int) }
        var delayed: [(due: ContinuousClock.Instant, arrival: Arrival)] = []
        var delayedHead = 0
        // Peers whose liveness this rank watches: rank 0 watches everyone, the others watch rank 0.
        let watched = rank == 0 ? Array(1..<max(1, worldSize)) : [0]
        while running.load(ordering: .relaxed) || !pending.isEmpty {
            var busy = false
            // Post queued sends.
            let queued = outbox.withLock { q -> [(target: Int, item: Outgoing)] in let all = q; q.removeAll(); return all }
            for (target, item) in queued {
                busy = true
                do {
                    var frame: [UInt8], frameTag: Int32
                    switch item {
                    case .message(var message):
                        framesSent += 1
                        let damage = FaultInjection.damage(rank: rank, frame: framesSent)
                        if damage == .step, !message.sequences.isEmpty { message.sequences[0].startPosition += 1 }
                        frame = try encodeFrame(message, floatEncoding: floatEncoding)
                        if let damage { frame = FaultInjection.damaged(frame, damage) }
                        frameTag = tag
                    case .collective(let bytes): (frame, frameTag) = (bytes, collectiveTag)
                    }
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(frame.count, 1), alignment: 16)
                    frame.withUnsafeBytes { buffer.copyMemory(from: $0) }
                    var request: MPI_Request? = nil
                    let rc = MPI_Isend(buffer.baseAddress, Int32(frame.count), flamingo_mpi_byte(), Int32(target), frameTag,
                                       flamingo_comm_world(), &request)
                    if rc != flamingo_mpi_success() {
                        buffer.deallocate()
                        pendingSends.subtract(1, ordering: .relaxed)
                        fail(.mpi(call: "MPI_Isend to rank \(target)", code: rc), &failed)
                        continue
                    }
                    pending.append(PendingSend(request: request, buffer: buffer))
                    stats.withLock { $0.bytesSent += frame.count; $0.messagesSent += 1 }
                } catch {
                    pendingSends.subtract(1, ordering: .relaxed)
                    let what = if case .message(let m) = item { "\(m.kind)" } else { "a partial sum" }
                    fail(.badFrame(from: rank, reason: "cannot encode \(what): \(error.localizedDescription)"), &failed)
                }
            }
            // Retire completed sends.
            var i = 0
            while i < pending.count {
                var done: Int32 = 0
                MPI_Test(&pending[i].request, &done, flamingo_mpi_status_ignore())
                if done != 0 {
                    pending[i].buffer.deallocate()
                    pending.swapAt(i, pending.count - 1)
                    pending.removeLast()
                    pendingSends.subtract(1, ordering: .relaxed)
                    busy = true
                } else {
                    i += 1
                }
            }
            // Receive whatever has arrived.
            while true {
                var flag: Int32 = 0
                var status = MPI_Status()
                let rc = MPI_Iprobe(flamingo_mpi_any_source(), flamingo_mpi_any_tag(), flamingo_comm_world(), &flag, &status)
                if rc != flamingo_mpi_success() { fail(.mpi(call: "MPI_Iprobe", code: rc), &failed); break }
                if flag == 0 { break }
                busy = true
                let source = Int(flamingo_status_source(&status))
                let receivedTag = flamingo_status_tag(&status)
                var count: Int32 = 0
                MPI_Get_count(&status, flamingo_mpi_byte(), &count)
                var bytes = [UInt8](repeating: 0, count: Int(max(count, 0)))
                let recv = bytes.withUnsafeMutableBytes {
                    MPI_Recv($0.baseAddress, count, flamingo_mpi_byte(), Int32(source), receivedTag, flamingo_comm_world(),
                             flamingo_mpi_status_ignore())
                }
                if recv != flamingo_mpi_success() { fail(.mpi(call: "MPI_Recv from rank \(source)", code: recv), &failed); break }
                if source >= 0 && source < worldSize { lastHeard[source] = .now }
                stats.withLock { $0.bytesReceived += bytes.count; $0.messagesReceived += 1 }
                if receivedTag == collectiveTag {
                    // Partial sums: the emulated link delay applies to them as to any message.
                    if linkDelay > .zero {
                        delayed.append((.now + linkDelay, .collective(bytes, from: source)))
                    } else {
                        collectives.push(bytes, from: source)
                    }
                    continue
                }
                guard receivedTag == tag else {
                    fail(.badFrame(from: source, reason: "message with unknown MPI tag \(receivedTag)"), &failed)
                    break
                }
                do {
                    let message = try decodeFrame(bytes)
                    if message.kind != .heartbeat {
                        if linkDelay > .zero {  // (a rank's messages to itself never come through MPI)
                            delayed.append((.now + linkDelay, .message(message)))
                        } else {
                            inbox.push(.success(message))
                        }
                    }
                } catch {
                    fail(.badFrame(from: source, reason: error.localizedDescription), &failed)
                }
            }
            // Hand on delayed messages that are due.
            let now = ContinuousClock.now
            while delayedHead < delayed.count && delayed[delayedHead].due <= now {
                switch delayed[delayedHead].arrival {
                case .message(let m): inbox.push(.success(m))
                case .collective(let bytes, let source): collectives.push(bytes, from: source)
                }
                delayedHead += 1
                busy = true
            }
            if delayedHead == delayed.count && delayedHead > 0 {
                delayed.removeAll(keepingCapacity: true)
                delayedHead = 0
            }
            // Heartbeats and liveness.
            if running.load(ordering: .relaxed) && now - lastHeartbeat >= heartbeatInterval && worldSize > 1 {
                lastHeartbeat = now
                for peer in watched {
                    let frame = (try? encodeFrame(Message(kind: .heartbeat, sourceRank: UInt32(rank)))) ?? []
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(frame.count, 1), alignment: 16)
                    frame.withUnsafeBytes { buffer.copyMemory(from: $0) }
                    var request: MPI_Request? = nil
                    if MPI_Isend(buffer.baseAddress, Int32(frame.count), flamingo_mpi_byte(), Int32(peer), tag,
                                 flamingo_comm_world(), &request) == flamingo_mpi_success() {
                        pendingSends.add(1, ordering: .relaxed)
                        pending.append(PendingSend(request: request, buffer: buffer))
                    } else {
                        buffer.deallocate()
                    }
                }
                for peer in watched where now - lastHeard[peer] > peerTimeout {
                    let seconds = Double((now - lastHeard[peer]).components.seconds)
                    fail(.peerSilent(rank: peer, seconds: seconds), &failed)
                }
            }
            if !running.load(ordering: .relaxed) && !pending.isEmpty {
                // Shutting down: give sends a moment, but never hang on a peer that is gone.
                usleep(1000)
                if pending.count > 0 && pendingSends.load(ordering: .relaxed) == 0 { break }
            }
            if busy {
                idleSleep = 50
            } else if delayedHead < delayed.count {
                // Wake when the next delayed message is due (the delay is the experiment: keep it exact).
                let wait = delayed[delayedHead].due - ContinuousClock.now
                let us = max(0, wait.components.seconds * 1_000_000 + wait.components.attoseconds / 1_000_000_000_000)
                _ = outgoing.wait(timeout: .now() + .microseconds(Int(min(Int64(idleSleep), us))))
                idleSleep = min(idleSleep * 2, Self.longestIdleWait)
            } else {
                _ = outgoing.wait(timeout: .now() + .microseconds(Int(idleSleep)))
                idleSleep = min(idleSleep * 2, Self.longestIdleWait)
            }
        }
        finished.lock()
        threadDone = true
        finished.signal()
        finished.unlock()
    }

    private func fail(_ error: TransportError, _ failed: inout Bool) {
        if !failed { inbox.push(.failure(error)) }
        failed = true
    }
}
