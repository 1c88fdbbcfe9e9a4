import FlamingoCore
import FlamingoModel
import Foundation
import Synchronization

/// The serving engine on rank 0: many clients submit requests from any thread or task; one
/// engine thread owns the coordinator and the transport, admits requests into microbatch groups
/// between steps (continuous batching), streams tokens back, cancels sequences whose client went
/// away (freeing their caches on every rank), and shuts the pipeline down.
public final class PipelineEngine: GenerationEngine, @unchecked Sendable {
    public let directory: ModelDirectory
    public let maxQueued: Int
    private let transport: StageTransport
    private let shared = Mutex(Shared())
    private let stopped = DispatchSemaphore(value: 0)

    private struct Submission {
        let key: UInt64
        let request: GenerationRequest
        let imageIndex: [Int?]
        let continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation
    }

    /// What client threads and the engine thread share.
    private struct Shared {
        var submissions: [Submission] = []
        var cancellations: [UInt64] = []
        var nextKey: UInt64 = 1
        var accepting = true
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
        let key = try shared.withLock { s -> UInt64 in
            guard s.accepting else { throw EngineError.unavailable("shutting down") }
            guard s.status.ready else { throw EngineError.unavailable("still loading") }
            guard s.status.queued < maxQueued else { throw EngineError.queueFull(limit: maxQueued) }
            let key = s.nextKey
            s.nextKey += 1
            s.submissions.append(Submission(key: key, request: request, imageIndex: imageIndex, continuation: continuation))
            s.status.queued += 1
            return key
        }
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(key) }
        }
        transport.wake()
        return stream
    }

    private func cancel(_ key: UInt64) {
        shared.withLock { $0.cancellations.append(key) }
        transport.wake()
    }

    public func shutdown(grace: Duration) async {
        shared.withLock { s in
            s.accepting = false
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

    /// `ownBusy`: seconds rank 0 has computed (its stage and the vision tower); the other ranks'
    /// figures arrive in their STATS messages.
    private func publishStatus(_ coordinator: Coordinator, ownBusy: Double) {
        shared.withLock {
            $0.status.queued = $0.submissions.count + coordinator.waitingCount
            $0.status.active = coordinator.activeCount
            $0.status.stageBusySeconds[0] = ownBusy
        }
    }

    /// The engine thread's loop; returns after shutdown (every rank told to stop) or throws when
    /// the pipeline failed.
    func run(coordinator: inout Coordinator, worker: inout StageWorker, visualTokens: ((Tensor) -> Tensor)?,
             workerRanks: Range<Int>) throws {
        defer { stopped.signal() }
        var streams: [UInt64: AsyncThrowingStream<GenerationEvent, Error>.Continuation] = [:]
        var idForKey: [UInt64: UInt64] = [:]
        var keyForID: [UInt64: UInt64] = [:]
        var promptTokens: [UInt64: Int] = [:]
        coordinator.onToken = { id, token in streams[id]?.yield(.token(token)) }
        coordinator.onFinish = { id, result in
            streams[id]?.yield(.finished(result.finishReason, promptTokens: promptTokens[id] ?? 0,
                                         completionTokens: result.tokens.count))
            streams[id]?.finish()
            streams[id] = nil
            promptTokens[id] = nil
            if let key = keyForID.removeValue(forKey: id) { idForKey[key] = nil }
        }
        let send: (Message, Int) throws -> Void = { [transport] message, rank in try transport.send(message, to: rank) }
        shared.withLock { $0.status.ready = true }
        var dispatchTime: Duration = .zero
        do {
            while true {
                let (newWork, cancels, deadline) = shared.withLock { s -> ([Submission], [UInt64], ContinuousClock.Instant?) in
                    let taken = (s.submissions, s.cancellations, s.shutdownDeadline)
                    s.submissions = []
                    s.cancellations = []
                    return taken
                }
                for sub in newWork {
                    let id = coordinator.submit(sub.request, imageIndex: sub.imageIndex)
                    streams[id] = sub.continuation
                    idForKey[sub.key] = id
                    keyForID[id] = sub.key
                    promptTokens[id] = sub.request.promptTokens.count
                }
                for key in cancels {
                    guard let id = idForKey.removeValue(forKey: key) else { continue }
                    keyForID[id] = nil
                    streams[id] = nil
                    try coordinator.cancel(id, send: send)
                }
                if let deadline {
                    if coordinator.isIdle { break }
                    if ContinuousClock.now >= deadline {
                        // Grace period over: end what is left.
                        for (id, stream) in streams {
                            stream.finish(throwing: EngineError.unavailable("the server shut down"))
                            try coordinator.cancel(id, send: send)
                        }
                        streams = [:]
                        if coordinator.isIdle { break }
                    }
                }
                let dispatchStart = ContinuousClock.now
                try coordinator.dispatch(send: send, visualTokens: visualTokens)
                dispatchTime += ContinuousClock.now - dispatchStart  // the vision tower runs here
                publishStatus(coordinator, ownBusy: (worker.computeTime + dispatchTime).seconds)
                guard let message = try transport.receive(timeout: coordinator.isIdle ? .seconds(1) : .milliseconds(200)) else { continue }
                if message.kind == .stats, let stats = message.stats {
                    shared.withLock { $0.status.stageBusySeconds[Int(stats.rank)] = stats.computeSeconds }
                    continue
                }
                try PipelineRuntime.handleOnCoordinator(message, coordinator: &coordinator, worker: &worker, send: send)
                publishStatus(coordinator, ownBusy: (worker.computeTime + dispatchTime).seconds)
            }
        } catch {
            shared.withLock { $0.status.ready = false; $0.accepting = false }
            for stream in streams.values { stream.finish(throwing: EngineError.failed(error.localizedDescription)) }
            throw error
        }
        shared.withLock { $0.status.ready = false }
        for r in workerRanks { try? transport.send(Message(kind: .shutdown), to: r) }
        transport.flush(timeout: .seconds(5))
    }
}

extension PipelineRuntime {
    /// Serving: every rank loads its stage. Rank 0 hands a `PipelineEngine` to `serve` at once (the
    /// HTTP server listens while the model loads; `engine.status.ready` turns true, and requests are
    /// accepted, only when every rank has loaded and said HELLO), and loads, waits for its peers
    /// and runs the engine on a thread of its own. `serve` returns after `engine.shutdown`. The
    /// other ranks serve their stage until rank 0 shuts them down. A failure of the pipeline
    /// (loading included) prints one error line and ends the whole job.
    public static func serve(
        transport: StageTransport, directory: ModelDirectory, options: PipelineOptions, maxQueued: Int,
        progress: @escaping (String) -> Void = { _ in },
        serve: @escaping @Sendable (PipelineEngine) async throws -> Void
    ) async throws {
        // Loading, waiting for peers and serving a stage block their thread: keep them off Swift's
        // cooperative pool, which the HTTP server needs.
        if transport.rank != 0 {
            try await onOwnThread {
                let setup = try prepare(transport: transport, directory: directory, options: options, progress: progress)
                var worker = setup.worker
                try serveStage(&worker, transport: transport, send: { try transport.send($0, to: $1) },
                               startupTimeout: options.startupTimeout, started: setup.started, reportEvery: .seconds(1))
            }
            return
        }
        let engine = PipelineEngine(directory: directory, transport: transport, maxQueued: maxQueued)
        let box = UncheckedSendable(progress)
        let engineThread = Thread {
            do {
                let setup = try prepare(transport: transport, directory: directory, options: options, progress: box.value)
                try awaitHellos(transport: transport, fingerprint: setup.fingerprint, timeout: options.startupTimeout)
                let (plan, model) = (setup.plan, setup.worker.model)
                var worker = setup.worker
                let groupCount = options.microbatches ?? max(4, plan.languageStages.count)
                var coordinator = Coordinator(plan: plan, groupCount: groupCount, batchSize: options.batchSize)
                let visualTokens: ((Tensor) -> Tensor)? = worker.assignment.vision ? { model.visualTokens(pixels: $0) } : nil
                try engine.run(coordinator: &coordinator, worker: &worker, visualTokens: visualTokens,
                               workerRanks: 1..<max(1, transport.worldSize))
            } catch {
                let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
                let prefix = transport.worldSize > 1 ? "rank 0: " : ""
                FileHandle.standardError.write(Data("error: \(prefix)\(message)\n".utf8))
                // The pipeline is gone (or never came up): end every rank now rather than serve errors forever.
                for r in 1..<max(1, transport.worldSize) {
                    try? transport.send(Message(kind: .shutdown, errorMessage: "rank 0: \(message)"), to: r)
                }
                transport.flush(timeout: .seconds(2))
                transport.abortJob(code: 1)
            }
        }
        engineThread.name = "pipeline-engine"
        engineThread.stackSize = 8 << 20
        engineThread.start()
        try await serve(engine)
    }
}

/// Runs blocking `body` on a thread of its own and awaits its result.
func onOwnThread<T>(_ body: @escaping () throws -> T) async throws -> T {
    let box = UncheckedSendable(body)
    return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<UncheckedSendable<T>, Error>) in
        let thread = Thread {
            do { continuation.resume(returning: UncheckedSendable(try box.value())) } catch { continuation.resume(throwing: error) }
        }
        thread.stackSize = 8 << 20
        thread.start()
    }.value
}
