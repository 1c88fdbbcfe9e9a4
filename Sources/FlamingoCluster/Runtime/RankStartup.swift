import FlamingoCore
import FlamingoModel
import Foundation

// Start-up of every rank: plan, load its stage, HELLO; rank 0 checks its peers loaded the same
// model and sends the PLAN each of them checks against its own.

extension PipelineRuntime {
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
        FaultInjection.enter(.load, rank: transport.rank)
        let config = directory.config
        let weights = try WeightStore(directory: directory.url, quantizeMatrices: options.quantizeMatrices)
        let shape = try ModelShape.forLoading(directory: directory, weights: weights, quantizeMatrices: options.quantizeMatrices)
        // Every rank computes the same plan from the same inputs; HELLO checks they agree.
        let plan = try FlamingoCluster.plan(shape: shape, ranks: transport.worldSize, memoryPerRank: options.memoryPerRank,
                                            visionOwnRank: options.visionOwnRank, rankSpeeds: options.rankSpeeds,
                                            tensorParallel: options.tensorParallel)
        let assignment = plan.stages[transport.rank]
        // A host whose control group caps memory below this rank's weights would only thrash
        // (mapped weights are dropped and read again at the cap): refuse, naming the limit.
        if let limit = MachineLimits.controlGroupMemoryLimit(), assignment.weightBytes + PlanDefaults.reservePerRank > limit {
            let why = "rank \(transport.rank) would map \(gib(assignment.weightBytes)) of weights (+ \(gib(PlanDefaults.reservePerRank)) for caches), more than this host's memory limit of \(gib(limit)) (its control group)"
            do {
                _ = try FlamingoCluster.plan(shape: shape, ranks: transport.worldSize, memoryPerRank: limit,
                                             visionOwnRank: options.visionOwnRank, rankSpeeds: options.rankSpeeds,
                                             tensorParallel: options.tensorParallel)
            } catch PlanError.tooFewRanks(let needed, let given, _) {
                throw PlanError.tooFewRanks(needed: needed, given: given, reason: why)
            } catch let error as PlanError {
                throw PlanError.invalid(why + ": " + (error.errorDescription ?? "\(error)"))
            }
            throw PlanError.invalid(why + "; give --mem-per-rank \(limit / (1 << 20))MiB so the layers are split to fit it")
        }
        // A tensor-parallel rank holds its share of each layer and adds partial sums with its group.
        let shard = assignment.tensorParallelSize > 1
            ? TensorParallelGroup(ranks: plan.tensorGroup(of: assignment), ownRank: transport.rank, transport: transport).shard : nil
        let parts = ModelParts(vision: assignment.vision, embedding: assignment.embedding,
                               layers: assignment.layers, outputHead: assignment.outputHead, shard: shard)
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

    /// Rank 0, after every HELLO: the plan it runs, for each rank to check against its own (a
    /// rank started with other layout options would otherwise run other layers silently).
    static func sendPlan(_ plan: PipelinePlan, fingerprint: Fingerprint, transport: StageTransport) throws {
        let message = Message(kind: .plan, plan: plan.wire(configHash: fingerprint.config))
        for r in 1..<max(1, transport.worldSize) { try transport.send(message, to: r) }
    }
}

extension PipelinePlan {
    /// The plan as a PLAN message carries it.
    func wire(configHash: UInt64) -> Message.Plan {
        Message.Plan(stages: stages.map {
            Message.Stage(rank: UInt32($0.rank), layers: $0.layers, ownsInput: $0.vision || $0.embedding, ownsOutput: $0.outputHead,
                          tensorParallelRank: UInt32($0.tensorParallelRank), tensorParallelSize: UInt32($0.tensorParallelSize))
        }, configHash: configHash)
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
