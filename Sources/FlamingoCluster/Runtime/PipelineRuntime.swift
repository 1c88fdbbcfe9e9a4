import FlamingoCore
import FlamingoModel
import Foundation

/// How a run is laid out and scheduled.
public struct PipelineOptions: Sendable {
    /// Give vision + resampler a rank of their own (rank 1).
    public var visionOwnRank = false
    /// Microbatch groups in flight (default: max(4, LM stages), so every stage has work).
    public var microbatches: Int?
    /// Sequences per microbatch group.
    public var batchSize = 8
    /// Memory each rank may use, for planning (nil: no limit).
    public var memoryPerRank: Int?
    /// Relative speed of each rank for balancing stages (rank order; nil: all equal).
    public var rankSpeeds: [Double]?
    /// Ranks per LM stage (tensor parallelism; 1: none).
    public var tensorParallel = 1
    /// How long to wait for a peer's first message after start (model loading included).
    public var startupTimeout: Duration = .seconds(600)
    /// Quantize the language model's weight matrices to int8 at load (`--quantize int8`).
    public var quantizeMatrices = false
    public init() {}
}

/// What a finished run reports on rank 0.
public struct RunReport: Sendable {
    public var results: [GenerationResult]
    public var plan: PipelinePlan
    /// Per-rank statistics, rank order (filled when asked for).
    public var stats: [RankStats]
    public var seconds: Double
    /// Each request's first and last token, from the first dispatch (request order).
    public var timings: [RequestTiming] = []
}

/// When a request's tokens came, in seconds from the run's first dispatch.
public struct RequestTiming: Sendable, Equatable {
    public var firstTokenSeconds: Double
    public var lastTokenSeconds: Double
    public var tokens: Int
}

/// Runs the pipeline of the transport's ranks, for a batch (`run`) or serving (`serve`). Every
/// rank calls the same function with the same model and options; each loads only its own stage.
/// Rank 0 runs the `PipelineEngine` (requests, scheduling, sampling) next to its own stage; the
/// other ranks serve their stage (`serveStage`) until rank 0 stops them (`stopWorkers`).
public enum PipelineRuntime {
    /// A batch. Rank 0 builds the requests (tokenizer, images) and gets the report; the other
    /// ranks get nil. A bad request ends every rank before any work.
    public static func run(
        transport: StageTransport,
        directory: ModelDirectory,
        options: PipelineOptions,
        collectStats: Bool = false,
        progress: @escaping (String) -> Void = { _ in },
        makeRequests: () throws -> [GenerationRequest]
    ) throws -> RunReport? {
        let setup = try prepare(transport: transport, directory: directory, options: options, progress: progress)
        var worker = setup.worker
        if transport.rank != 0 {
            try serveStage(&worker, transport: transport, fingerprint: setup.fingerprint, started: setup.started)
            return nil
        }
        let engine = PipelineEngine(directory: directory, transport: transport, maxQueued: .max)
        do {
            try engine.submitBatch(try makeRequests())
        } catch {
            stopWorkers(transport: transport, failure: "rank 0: \(error.localizedDescription)")
            throw error
        }
        do {
            try awaitHellos(transport: transport, fingerprint: setup.fingerprint, timeout: options.startupTimeout)
            try sendPlan(setup.plan, fingerprint: setup.fingerprint, transport: transport)
            let outcome = try engine.run(worker: &worker, options: options)
            let stats = try stopWorkers(transport: transport, collectingStatsOf: collectStats ? worker : nil, started: setup.started)
            return RunReport(results: outcome.results, plan: setup.plan, stats: stats, seconds: outcome.seconds,
                             timings: outcome.timings)
        } catch {
            stopWorkers(transport: transport, failure: "rank 0: \(error.localizedDescription)")
            throw error
        }
    }

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
                try serveStage(&worker, transport: transport, fingerprint: setup.fingerprint, started: setup.started,
                               reportEvery: .seconds(1))
            }
            return
        }
        let engine = PipelineEngine(directory: directory, transport: transport, maxQueued: maxQueued)
        let box = UncheckedSendable(progress)
        let engineThread = Thread {
            do {
                let setup = try prepare(transport: transport, directory: directory, options: options, progress: box.value)
                try awaitHellos(transport: transport, fingerprint: setup.fingerprint, timeout: options.startupTimeout)
                try sendPlan(setup.plan, fingerprint: setup.fingerprint, transport: transport)
                var worker = setup.worker
                _ = try engine.run(worker: &worker, options: options)
                _ = try stopWorkers(transport: transport, collectingStatsOf: nil, started: setup.started)
                engine.finished()
            } catch {
                let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
                let prefix = transport.worldSize > 1 ? "rank 0: " : ""
                FileHandle.standardError.write(Data("error: \(prefix)\(message)\n".utf8))
                // The pipeline is gone (or never came up): end every rank now rather than serve errors forever.
                stopWorkers(transport: transport, failure: "rank 0: \(message)")
                transport.abortJob(code: 1)
            }
        }
        engineThread.name = "pipeline-engine"
        engineThread.stackSize = 8 << 20
        engineThread.start()
        try await serve(engine)
    }

    /// The one way rank 0 ends the other ranks: with `stats` (a batch's --stats), each answers a
    /// STATS_REQUEST first; then every rank gets SHUTDOWN. Returns every rank's figures, rank 0's
    /// (from `stats`) included, in rank order.
    static func stopWorkers(transport: StageTransport, collectingStatsOf stats: StageWorker?,
                            started: ContinuousClock.Instant) throws -> [RankStats] {
        let workers = 1..<max(1, transport.worldSize)
        var figures: [RankStats] = []
        if let worker = stats {
            figures.append(RankStats.current(rank: 0, assignment: worker.assignment, worker: worker, transport: transport,
                                             started: started))
            for r in workers { try transport.send(Message(kind: .statsRequest), to: r) }
            var pending = Set(workers)
            while !pending.isEmpty {
                guard let m = try transport.receive(timeout: .seconds(10)) else {
                    throw PipelineError.protocolViolation("ranks \(pending.sorted()) did not report statistics")
                }
                if m.kind == .stats, let s = m.stats, pending.remove(Int(m.sourceRank)) != nil { figures.append(s) }
            }
            figures.sort { $0.rank < $1.rank }
        }
        for r in workers { try transport.send(Message(kind: .shutdown), to: r) }
        transport.flush(timeout: .seconds(5))
        return figures
    }

    /// After a failure on rank 0: SHUTDOWN carrying the reason to every other rank, best effort.
    static func stopWorkers(transport: StageTransport, failure: String) {
        for r in 1..<max(1, transport.worldSize) {
            try? transport.send(Message(kind: .shutdown, errorMessage: failure), to: r)
        }
        transport.flush(timeout: .seconds(2))
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
