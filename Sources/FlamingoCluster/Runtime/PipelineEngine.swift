import FlamingoCore
import FlamingoModel
import Foundation
import Synchronization

/// Rank 0's engine, the one loop for a batch (`generate --requests`) and for serving: requests are
/// validated once, at admission (`submit`, `submitBatch`), and get their sequence id there, the one
/// id every rank knows them by. One engine thread owns the coordinator, rank 0's own stage and the
/// transport: it admits requests into microbatch groups between steps (continuous batching),
/// streams tokens back (or collects a batch's results), cancels sequences whose client went away
/// (freeing their caches on every rank), and at the end stops every rank.
public final class PipelineEngine: GenerationEngine, @unchecked Sendable {
    public let directory: ModelDirectory
    public let maxQueued: Int
    private let transport: StageTransport
    private let shared = Mutex(Shared())
    private let stopped = DispatchSemaphore(value: 0)

    /// Where a sequence's output goes: a client's stream, or slot `index` of a batch's results.
    private enum Sink {
        case stream(AsyncThrowingStream<GenerationEvent, Error>.Continuation)
        case batch(index: Int)
    }

    private struct Submission {
        let id: UInt64
        let request: GenerationRequest
        let imageIndex: [Int?]
        /// A batch's fixed group (request i in group i % groups); nil: the least-loaded group.
        let group: Int?
        let sink: Sink
    }

    /// What client threads and the engine thread share.
    private struct Shared {
        var submissions: [Submission] = []
        var cancellations: [UInt64] = []
        var nextID: UInt64 = 1
        var accepting = true
        /// Stop once nothing is left (a batch, or a shutdown asked for).
        var stopWhenIdle = false
        /// Then end whatever is still running (a server's grace period).
        var shutdownDeadline: ContinuousClock.Instant? = nil
        var status = EngineStatus(ready: false, queued: 0, active: 0)
    }

    init(directory: ModelDirectory, transport: StageTransport, maxQueued: Int) {
        self.directory = directory
        self.transport = transport
        self.maxQueued = maxQueued
    }

    public var status: EngineStatus { shared.withLock { $0.status } }

    public func submit(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        let imageIndex = try request.validate(config: directory.config, imageTokenID: directory.imageTokenID)
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        let id = try shared.withLock { s -> UInt64 in
            guard s.accepting else { throw EngineError.unavailable("shutting down") }
            guard s.status.ready else { throw EngineError.unavailable("still loading") }
            guard s.status.queued < maxQueued else { throw EngineError.queueFull(limit: maxQueued) }
            let id = s.nextID
            s.nextID += 1
            s.submissions.append(Submission(id: id, request: request, imageIndex: imageIndex, group: nil,
                                            sink: .stream(continuation)))
            s.status.queued += 1
            return id
        }
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id) }
        }
        transport.wake()
        return stream
    }

    /// A batch: every request validated (the first bad one throws, nothing is queued), request i
    /// in microbatch group i % groups so every number is the same whatever the ranks or timing,
    /// and the engine stops once they are all done. `run` returns their results in order.
    func submitBatch(_ requests: [GenerationRequest]) throws {
        let indices = try requests.map { try $0.validate(config: directory.config, imageTokenID: directory.imageTokenID) }
        shared.withLock { s in
            for (i, request) in requests.enumerated() {
                s.submissions.append(Submission(id: s.nextID, request: request, imageIndex: indices[i], group: i,
                                                sink: .batch(index: i)))
                s.nextID += 1
            }
            s.accepting = false
            s.stopWhenIdle = true
        }
    }

    private func cancel(_ id: UInt64) {
        shared.withLock { $0.cancellations.append(id) }
        transport.wake()
    }

    public func shutdown(grace: Duration) async {
        shared.withLock { s in
            s.accepting = false
            s.stopWhenIdle = true
            s.shutdownDeadline = s.shutdownDeadline ?? ContinuousClock.now + grace
        }
        transport.wake()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.stopped.wait()
                self.stopped.signal()
                done.resume()
            }
        }
    }

    /// `ownBusy`: seconds rank 0 has computed; the other ranks' figures arrive in their STATS.
    private func publishStatus(_ coordinator: Coordinator, ownBusy: Double) {
        shared.withLock {
            $0.status.queued = $0.submissions.count + coordinator.waitingCount
            $0.status.active = coordinator.activeCount
            $0.status.stageBusySeconds[0] = ownBusy
        }
    }

    /// What a finished run hands back: a batch's results in submission order, and the seconds
    /// from the first dispatch until the pipeline was idle.
    struct Outcome {
        var results: [GenerationResult]
        var seconds: Double
        /// A batch's requests in order: seconds from the first dispatch to their first and last token.
        var timings: [RequestTiming]
    }

    /// The engine thread's loop, after every rank said HELLO: runs until shutdown was asked for and
    /// nothing is left (or the grace period is over), or throws when the pipeline failed (every
    /// stream then ends with the error). Does not stop the other ranks: the caller does
    /// (`PipelineRuntime.stopWorkers`), with or without their statistics.
    func run(worker: inout StageWorker, options: PipelineOptions) throws -> Outcome {
        let plan = worker.plan
        var coordinator = Coordinator(plan: plan, groupCount: options.microbatches ?? max(4, plan.languageStages.count),
                                      batchSize: options.batchSize)
        var streams: [UInt64: AsyncThrowingStream<GenerationEvent, Error>.Continuation] = [:]
        var batchSlot: [UInt64: Int] = [:]
        var batchResults: [Int: GenerationResult] = [:]
        var promptTokens: [UInt64: Int] = [:]
        var firstToken: [UInt64: Double] = [:]
        var batchTimings: [Int: RequestTiming] = [:]
        let started = ContinuousClock.now
        coordinator.onToken = { id, token in
            if firstToken[id] == nil { firstToken[id] = (ContinuousClock.now - started).seconds }
            streams[id]?.yield(.token(token))
        }
        coordinator.onFinish = { id, result in
            let first = firstToken.removeValue(forKey: id) ?? 0
            if let slot = batchSlot.removeValue(forKey: id) {
                batchResults[slot] = result
                batchTimings[slot] = RequestTiming(firstTokenSeconds: first, lastTokenSeconds: (ContinuousClock.now - started).seconds,
                                                   tokens: result.tokens.count)
            }
            streams[id]?.yield(.finished(result.finishReason, promptTokens: promptTokens[id] ?? 0,
                                         completionTokens: result.tokens.count))
            streams[id]?.finish()
            streams[id] = nil
            promptTokens[id] = nil
        }
        let send: (Message, Int) throws -> Void = { [transport] message, rank in try transport.send(message, to: rank) }
        shared.withLock { $0.status.ready = true }
        do {
            while true {
                let (newWork, cancels, stopWhenIdle, deadline) = shared.withLock {
                    s -> ([Submission], [UInt64], Bool, ContinuousClock.Instant?) in
                    let taken = (s.submissions, s.cancellations, s.stopWhenIdle, s.shutdownDeadline)
                    s.submissions = []
                    s.cancellations = []
                    return taken
                }
                if !newWork.isEmpty { FaultInjection.enter(.prefill, rank: 0) }
                for sub in newWork {
                    coordinator.submit(sub.request, id: sub.id, imageIndex: sub.imageIndex, group: sub.group)
                    switch sub.sink {
                    case .stream(let continuation): streams[sub.id] = continuation
                    case .batch(let index): batchSlot[sub.id] = index
                    }
                    promptTokens[sub.id] = sub.request.promptTokens.count
                }
                for id in cancels where streams.removeValue(forKey: id) != nil {
                    try coordinator.cancel(id, send: send)
                }
                if stopWhenIdle {
                    if coordinator.isIdle { break }
                    if let deadline, ContinuousClock.now >= deadline {
                        // Grace period over: end what is left.
                        for (id, stream) in streams {
                            stream.finish(throwing: EngineError.unavailable("the server shut down"))
                            try coordinator.cancel(id, send: send)
                        }
                        streams = [:]
                        if coordinator.isIdle { break }
                    }
                }
                try coordinator.dispatch(send: send)
                publishStatus(coordinator, ownBusy: worker.computeTime.seconds)
                guard let message = try transport.receive(timeout: coordinator.isIdle ? .seconds(1) : .milliseconds(200)) else { continue }
                switch message.kind {
                case .logits:
                    try coordinator.handleLogits(message, send: send)
                    FaultInjection.enter(.decode, rank: 0)
                case .error:
                    throw PipelineError.stageFailed(rank: Int(message.sourceRank), message: message.errorMessage)
                case .visualTokens, .prefill, .decode, .cancel:
                    try worker.handle(message, send: send)  // rank 0's own stage
                case .stats:
                    if let stats = message.stats {
                        shared.withLock { $0.status.stageBusySeconds[Int(stats.rank)] = stats.computeSeconds }
                    }
                case .heartbeat:
                    break  // a wake-up: new submissions or cancellations
                default:
                    throw PipelineError.protocolViolation("rank 0 got an unexpected \(message.kind) from rank \(message.sourceRank)")
                }
                publishStatus(coordinator, ownBusy: worker.computeTime.seconds)
            }
        } catch {
            shared.withLock { $0.status.ready = false; $0.accepting = false }
            for stream in streams.values { stream.finish(throwing: EngineError.failed(error.localizedDescription)) }
            stopped.signal()
            throw error
        }
        let seconds = (ContinuousClock.now - started).seconds
        shared.withLock { $0.status.ready = false }
        return Outcome(results: batchResults.sorted { $0.key < $1.key }.map(\.value), seconds: seconds,
                       timings: batchTimings.sorted { $0.key < $1.key }.map(\.value))
    }

    /// Called once the other ranks are stopped: `shutdown` returns.
    func finished() { stopped.signal() }
}
