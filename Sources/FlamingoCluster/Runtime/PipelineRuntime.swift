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
}

/// Runs requests through the pipeline of the transport's ranks. Every rank calls `run` with the
/// same model and options; each loads only its own stage. Rank 0 builds the requests (tokenizer,
/// images), schedules and samples, and gets the report; the other ranks serve their stage until
/// rank 0 shuts them down, and get nil.
public enum PipelineRuntime {
    public static func run(
        transport: StageTransport,
        directory: ModelDirectory,
        options: PipelineOptions,
        collectStats: Bool = false,
        progress: @escaping (String) -> Void = { _ in },
        makeRequests: () throws -> [GenerationRequest]
    ) throws -> RunReport? {
        let setup = try prepare(transport: transport, directory: directory, options: options, progress: progress)
        let (plan, assignment, model, fingerprint, started) = (setup.plan, setup.worker.assignment, setup.worker.model,
                                                                setup.fingerprint, setup.started)
        let config = directory.config
        var worker = setup.worker
        let send: (Message, Int) throws -> Void = { message, rank in try transport.send(message, to: rank) }

        if transport.rank != 0 {
            try serveStage(&worker, transport: transport, send: send, startupTimeout: options.startupTimeout, started: started)
            return nil
        }

        // Rank 0: requests first, so bad input ends every rank before any work.
        let requests: [GenerationRequest]
        do {
            requests = try makeRequests()
        } catch {
            for r in 1..<max(1, transport.worldSize) {
                try? transport.send(Message(kind: .shutdown, errorMessage: "rank 0: \(error.localizedDescription)"), to: r)
            }
            transport.flush(timeout: .seconds(5))
            throw error
        }
        try awaitHellos(transport: transport, fingerprint: fingerprint, timeout: options.startupTimeout)

        let groupCount = options.microbatches ?? max(4, plan.languageStages.count)
        var coordinator = Coordinator(plan: plan, groupCount: groupCount, batchSize: options.batchSize)
        var results: [UInt64: GenerationResult] = [:]
        coordinator.onFinish = { id, result in results[id] = result }
        var ids: [UInt64] = []
        for (i, request) in requests.enumerated() {
            let index = try request.validate(config: config, imageTokenID: directory.imageTokenID)
            ids.append(coordinator.submit(request, imageIndex: index, group: i))
        }
        let visualTokens: ((Tensor) -> Tensor)? = assignment.vision ? { model.visualTokens(pixels: $0) } : nil
        let computeStart = ContinuousClock.now
        var visionTime: Duration = .zero
        while !coordinator.isIdle {
            let t0 = ContinuousClock.now
            try coordinator.dispatch(send: send, visualTokens: visualTokens)
            visionTime += ContinuousClock.now - t0
            guard let message = try transport.receive(timeout: .seconds(1)) else { continue }
            try handleOnCoordinator(message, coordinator: &coordinator, worker: &worker, send: send)
        }
        let seconds = (ContinuousClock.now - computeStart).seconds
        // Shut the other ranks down; collect their statistics on the way.
        var stats: [RankStats] = []
        for r in 1..<max(1, transport.worldSize) {
            try transport.send(Message(kind: .shutdown, step: collectStats ? 1 : 0), to: r)
        }
        if collectStats {
            worker.computeTime += visionTime
            stats.append(RankStats.current(rank: 0, assignment: assignment, worker: worker, transport: transport, started: started))
            var pending = Set(1..<max(1, transport.worldSize))
            while !pending.isEmpty {
                guard let m = try transport.receive(timeout: .seconds(10)) else {
                    throw PipelineError.protocolViolation("ranks \(pending.sorted()) did not report statistics")
                }
                if m.kind == .shutdown, let s = m.stats {
                    stats.append(s)
                    pending.remove(Int(m.sourceRank))
                }
            }
            stats.sort { $0.rank < $1.rank }
        }
        transport.flush(timeout: .seconds(5))
        return RunReport(results: ids.map { results[$0]! }, plan: plan, stats: stats, seconds: seconds)
    }

    struct Setup {
        let plan: PipelinePlan
        let worker: StageWorker
        let fingerprint: Fingerprint
        let started: ContinuousClock.Instant
    }

    /// What every rank does first: plan (the same on every rank), load its stage, and (ranks > 0)
    /// say HELLO to rank 0.
    static func prepare(transport: StageTransport, directory: ModelDirectory, options: PipelineOptions,
                        progress: @escaping (String) -> Void) throws -> Setup {
        let started = ContinuousClock.now
        let config = directory.config
        let weights = try WeightStore(directory: directory.url, quantizeMatrices: options.quantizeMatrices)
        let shape = try ModelShape.forLoading(directory: directory, weights: weights, quantizeMatrices: options.quantizeMatrices)
        // Every rank computes the same plan from the same inputs; HELLO checks they agree.
        let plan = try FlamingoCluster.plan(shape: shape, ranks: transport.worldSize, memoryPerRank: options.memoryPerRank,
                                            visionOwnRank: options.visionOwnRank)
        let assignment = plan.stages[transport.rank]
        let parts = ModelParts(vision: assignment.vision, embedding: assignment.embedding,
                               layers: assignment.layers, outputHead: assignment.outputHead)
        let model = try config.loadModel(weights: weights, parts: parts, progress: progress)
        let fingerprint = Fingerprint.of(directory: directory.url, weights: weights)
        if transport.rank != 0 {
            try transport.send(Message(kind: .hello, hello: .init(worldSize: UInt32(transport.worldSize),
                                                                  modelFingerprint: fingerprint.tensors,
                                                                  configHash: fingerprint.config,
                                                                  kernels: KernelTable.active.summary)), to: 0)
        }
        return Setup(plan: plan, worker: StageWorker(assignment: assignment, plan: plan, model: model),
                     fingerprint: fingerprint, started: started)
    }

    /// Rank 0's share of a message: logits for the coordinator, stage work for its own stage.
    static func handleOnCoordinator(_ message: Message, coordinator: inout Coordinator, worker: inout StageWorker,
                                    send: (Message, Int) throws -> Void) throws {
        switch message.kind {
        case .logits:
            try coordinator.handleLogits(message, send: send)
        case .error:
            throw PipelineError.stageFailed(rank: Int(message.sourceRank), message: message.errorMessage)
        case .visualTokens, .prefill, .decode, .cancel:
            try worker.handle(message, send: send)
        case .heartbeat, .stats:
            break  // a wake-up; a serving stage's figures (the engine reads them before this)
        default:
            throw PipelineError.protocolViolation("rank 0 got an unexpected \(message.kind) from rank \(message.sourceRank)")
        }
    }

    /// A worker rank's loop: handle stage messages until rank 0 says shut down. With `reportEvery`
    /// (serving), the rank also sends rank 0 its figures (STATS) that often, for /metrics.
    static func serveStage(_ worker: inout StageWorker, transport: StageTransport,
                           send: (Message, Int) throws -> Void, startupTimeout: Duration, started: ContinuousClock.Instant,
                           reportEvery: Duration? = nil) throws {
        var lastReport = ContinuousClock.now
        while true {
            if let reportEvery, ContinuousClock.now - lastReport >= reportEvery {
                lastReport = ContinuousClock.now
                var report = Message(kind: .stats)
                report.stats = RankStats.current(rank: transport.rank, assignment: worker.assignment, worker: worker,
                                                 transport: transport, started: started)
                try send(report, 0)
            }
            guard let message = try transport.receive(timeout: reportEvery.map { min($0, .seconds(1)) } ?? .seconds(1)) else { continue }
            switch message.kind {
            case .shutdown:
                if !message.errorMessage.isEmpty { throw PipelineError.stageFailed(rank: 0, message: message.errorMessage) }
                if message.step == 1 {
                    var reply = Message(kind: .shutdown)
                    reply.stats = RankStats.current(rank: transport.rank, assignment: worker.assignment, worker: worker,
                                                    transport: transport, started: started)
                    try transport.send(reply, to: 0)
                }
                transport.flush(timeout: .seconds(5))
                return
            case .visualTokens, .prefill, .decode, .cancel:
                do {
                    try worker.handle(message, send: send)
                } catch {
                    try? transport.send(Message(kind: .error, errorMessage: error.localizedDescription), to: 0)
                    transport.flush(timeout: .seconds(2))
                    throw error
                }
            default:
                throw PipelineError.protocolViolation("rank \(transport.rank) got an unexpected \(message.kind)")
            }
        }
    }

    /// Rank 0 waits for every other rank's HELLO and checks they loaded the same model. Ranks on
    /// different kernel families (a mixed cluster) work, but their numbers differ slightly from a
    /// one-process run: that is a warning on stderr, naming the ranks.
    static func awaitHellos(transport: StageTransport, fingerprint: Fingerprint, timeout: Duration) throws {
        var pending = Set(1..<max(1, transport.worldSize))
        let ownKernels = KernelTable.active.summary
        var otherKernels: [Int: String] = [:]
        defer {
            if !otherKernels.isEmpty {
                let lines = otherKernels.sorted { $0.key < $1.key }.map { "rank \($0.key): \($0.value)" }.joined(separator: "; ")
                FileHandle.standardError.write(Data("warning: mixed cluster: rank 0 runs kernels \(ownKernels), but \(lines); results can differ slightly from one process (set FLAMINGO_KERNELS to one level on every rank to match)\n".utf8))
            }
        }
        let deadline = ContinuousClock.now + timeout
        while !pending.isEmpty {
            guard ContinuousClock.now < deadline else {
                throw PipelineError.protocolViolation("ranks \(pending.sorted()) did not start within \(timeout)")
            }
            guard let m = try transport.receive(timeout: .seconds(1)) else { continue }
            let rank = Int(m.sourceRank)
            switch m.kind {
            case .hello:
                guard let hello = m.hello else { throw PipelineError.protocolViolation("HELLO without its payload") }
                if hello.worldSize != UInt32(transport.worldSize) {
                    throw PipelineError.mismatchedPeer(rank: rank, reason: "it sees \(hello.worldSize) ranks, rank 0 sees \(transport.worldSize)")
                }
                if hello.configHash != fingerprint.config {
                    throw PipelineError.mismatchedPeer(rank: rank, reason: "its config.json differs")
                }
                if hello.modelFingerprint != fingerprint.tensors {
                    throw PipelineError.mismatchedPeer(rank: rank, reason: "its checkpoint has different tensors")
                }
                if hello.kernels != ownKernels { otherKernels[rank] = hello.kernels }
                pending.remove(rank)
            case .error:
                throw PipelineError.stageFailed(rank: rank, message: m.errorMessage)
            case .stats, .heartbeat:
                continue  // a serving stage that is up already reports its figures
            default:
                throw PipelineError.protocolViolation("expected HELLO from rank \(rank), got \(m.kind)")
            }
        }
    }
}

/// Identifies a checkpoint cheaply: the config file's bytes and the tensor table (names, dtypes,
/// shapes), so ranks on different hosts can check they hold the same model.
struct Fingerprint {
    let config: UInt64
    let tensors: String

    static func of(directory: URL, weights store: WeightStore) -> Fingerprint {
        let configBytes = (try? Data(contentsOf: directory.appendingPathComponent("config.json"))) ?? Data()
        var table = ""
        for name in store.tensorNames {
            if let e = store.entry(name) { table += "\(name):\(e.dtype.rawValue):\(e.shape);" }
        }
        return Fingerprint(config: fnv1a(configBytes), tensors: String(fnv1a(Data(table.utf8)), radix: 16))
    }

    static func fnv1a(_ data: Data) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in data { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }
}

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
