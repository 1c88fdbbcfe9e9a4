import FlamingoCore
import FlamingoModel
import Foundation

/// Errors of the pipeline protocol itself (a peer sent something this stage cannot use).
public enum PipelineError: Error, LocalizedError, Equatable {
    case protocolViolation(String)
    case mismatchedPeer(rank: Int, reason: String)
    case stageFailed(rank: Int, message: String)

    public var errorDescription: String? {
        switch self {
        case .protocolViolation(let why): "pipeline protocol violation: \(why)"
        case .mismatchedPeer(let rank, let reason): "rank \(rank) does not match this rank: \(reason)"
        case .stageFailed(let rank, let message): "rank \(rank) failed: \(message)"
        }
    }
}

/// One rank's share of the model and the per-sequence state that lives with it. The stage code
/// is the model's own code over the rank's layer range (`LanguageModel.forward`), nothing more.
struct StageWorker {
    let assignment: StageAssignment
    let plan: PipelinePlan
    let model: any VisionLanguageModel
    /// Caches of the sequences this stage has seen, by sequence id.
    private(set) var caches: [UInt64: SequenceCache] = [:]
    /// Steps that arrived before the visual tokens they need (they come from another rank).
    private var deferred: [Message] = []
    var computeTime: Duration = .zero
    /// Most bytes the sequence caches held at once.
    private(set) var peakCacheBytes = 0

    init(assignment: StageAssignment, plan: PipelinePlan, model: any VisionLanguageModel) {
        self.assignment = assignment
        self.plan = plan
        self.model = model
    }

    /// The next LM stage's rank, or nil for the last one.
    private var nextStage: Int? {
        let lm = plan.languageStages
        guard let i = lm.firstIndex(where: { $0.rank == assignment.rank }), i + 1 < lm.count else { return nil }
        return lm[i + 1].rank
    }

    /// Ranks whose layers cross-attend (they need every request's visual tokens), tensor-parallel
    /// members included: each holds its heads' keys and values of every image.
    var crossAttendingRanks: [Int] { plan.stages.filter { !$0.layers.isEmpty && $0.crossBlocks > 0 }.map(\.rank) }

    /// A tensor-parallel leader's group members (they get each step's input from it); empty otherwise.
    private var members: [Int] {
        guard assignment.tensorParallelSize > 1, assignment.tensorParallelRank == 0 else { return [] }
        return Array(plan.tensorGroup(of: assignment).dropFirst())
    }

    /// Tensor-parallel ranks run steps strictly in the leader's order (their allreduces pair up
    /// step by step): once one step waits for visual tokens, every later one waits behind it.
    private var keepsStepOrder: Bool { assignment.tensorParallelSize > 1 }

    /// Handles one message addressed to this stage; `send` delivers what it produces.
    mutating func handle(_ message: Message, send: (Message, Int) throws -> Void) throws {
        switch message.kind {
        case .visualTokens:
            try handleVisualInput(message, send: send)
            // Visual tokens may unblock steps that were waiting for them.
            let waiting = deferred
            deferred.removeAll()
            for m in waiting { try handleStep(m, send: send) }
        case .prefill, .decode:
            FaultInjection.enter(message.kind == .prefill ? .prefill : .decode, rank: assignment.rank)
            try handleStep(message, send: send)
        case .cancel:
            for member in members { try send(message, member) }
            for s in message.sequences { caches[s.sequenceID] = nil }
            deferred.removeAll { m in m.sequences.contains { s in message.sequences.contains { $0.sequenceID == s.sequenceID } } }
        default:
            throw PipelineError.protocolViolation("stage \(assignment.rank) cannot handle \(message.kind)")
        }
    }

    /// Pixels (to the vision stage) become visual tokens sent to every cross-attending stage;
    /// visual tokens (to an LM stage) are attached to the sequence's cache.
    private mutating func handleVisualInput(_ message: Message, send: (Message, Int) throws -> Void) throws {
        guard let sequence = message.sequences.first else { throw PipelineError.protocolViolation("visual input without a sequence") }
        let pixelTensors = message.tensors.filter { $0.name.hasPrefix(Message.TensorName.pixels) }
        if !pixelTensors.isEmpty {
            guard assignment.vision else { throw PipelineError.protocolViolation("pixels sent to rank \(assignment.rank), which has no vision encoder") }
            let start = ContinuousClock.now
            var out = Message(kind: .visualTokens, requestID: message.requestID, sequences: [sequence])
            for (i, t) in pixelTensors.enumerated() {
                out.tensors.append(NamedTensor(Message.TensorName.visualTokens(image: i), model.visualTokens(pixels: t.tensor.toF32())))
            }
            computeTime += ContinuousClock.now - start
            for rank in crossAttendingRanks { try send(out, rank) }
            return
        }
        guard model.crossAttends else { return }
        let start = ContinuousClock.now
        var cache = caches[sequence.sequenceID] ?? model.makeCache()
        var i = 0
        let width = model.configuration.visualTokenWidth
        while let t = message.tensor(named: Message.TensorName.visualTokens(image: i)) {
            guard t.rank == 2, t.dim(1) == width else {
                throw PipelineError.protocolViolation("visual tokens of shape \(t.shape), expected [n, \(width)]")
            }
            model.attachImage(t.toF32(), to: &cache)
            i += 1
        }
        caches[sequence.sequenceID] = cache
        peakCacheBytes = max(peakCacheBytes, cacheBytes)
        computeTime += ContinuousClock.now - start
    }

    /// Runs this stage's layers on a microbatch and passes the result on (or returns logits).
    private mutating func handleStep(_ message: Message, send: (Message, Int) throws -> Void) throws {
        let width = model.configuration.language.hiddenSize
        // Wait for visual tokens that have not arrived yet.
        if keepsStepOrder && !deferred.isEmpty {
            deferred.append(message)
            return
        }
        if model.crossAttends {
            for s in message.sequences where (caches[s.sequenceID]?.imageCount ?? 0) < s.imageCount {
                deferred.append(message)
                return
            }
        }
        let start = ContinuousClock.now
        var h: Tensor
        if assignment.embedding {
            var ids: [Int] = []
            for s in message.sequences {
                guard s.tokenIDs.count == s.tokenCount else { throw PipelineError.protocolViolation("first stage needs token ids") }
                ids += s.tokenIDs
            }
            let vocab = model.configuration.language.vocabularySize
            if let bad = ids.first(where: { $0 < 0 || $0 >= vocab }) {
                throw PipelineError.protocolViolation("token id \(bad) outside the vocabulary of \(vocab)")
            }
            h = model.embed(ids)
        } else {
            guard let hidden = message.tensor(named: Message.TensorName.hidden),
                  hidden.shape == [message.totalTokenCount, width] else {
                throw PipelineError.protocolViolation("step without hidden states [\(message.totalTokenCount), \(width)]")
            }
            h = hidden.toF32()  // bf16 on the wire when asked for
        }
        // A tensor-parallel leader hands the step's input to its group, which computes with it.
        var computeStart = start
        if !members.isEmpty {
            var share = message
            share.tensors = [NamedTensor(Message.TensorName.hidden, h)]
            computeTime += ContinuousClock.now - start
            for member in members { try send(share, member) }
            computeStart = ContinuousClock.now
        }
        var slices: [SequenceSlice] = []
        var batchCaches: [SequenceCache] = []
        var row = 0
        for s in message.sequences {
            var cache = caches.removeValue(forKey: s.sequenceID) ?? model.makeCache()
            guard cache.length == s.startPosition else {
                throw PipelineError.protocolViolation("sequence \(s.sequenceID) is at position \(cache.length), step starts at \(s.startPosition)")
            }
            let index = s.imageIndex.isEmpty ? Array(repeating: nil, count: s.tokenCount) : s.imageIndex
            if !model.crossAttends { cache.imageCount = max(cache.imageCount, s.imageCount) }
            slices.append(SequenceSlice(rows: row..<(row + s.tokenCount), imageIndex: index))
            batchCaches.append(cache)
            row += s.tokenCount
        }
        model.forward(&h, slices: slices, caches: &batchCaches)
        if let failure = model.parts.shard?.failureMessage {
            throw PipelineError.protocolViolation("tensor-parallel allreduce on rank \(assignment.rank) failed: \(failure)")
        }
        for (s, cache) in zip(message.sequences, batchCaches) { caches[s.sequenceID] = cache }
        peakCacheBytes = max(peakCacheBytes, cacheBytes)
        if assignment.tensorParallelRank > 0 {
            computeTime += ContinuousClock.now - computeStart
            return  // the leader passes the group's result on
        }

        var out = message
        out.tensors = []
        if assignment.outputHead {
            let lastRows = slices.map { $0.rows.upperBound - 1 }
            var last = Tensor(zeros: [lastRows.count, width])
            last.withMutableFloats { dst in
                h.withFloats { src in
                    for (i, r) in lastRows.enumerated() {
                        for j in 0..<width { dst[i * width + j] = src[r * width + j] }
                    }
                }
            }
            out.kind = .logits
            out.tensors = [NamedTensor(Message.TensorName.logits, model.logits(last))]
            for i in out.sequences.indices { out.sequences[i].tokenIDs = []; out.sequences[i].imageIndex = [] }
            computeTime += ContinuousClock.now - computeStart
            try send(out, 0)
        } else {
            guard let next = nextStage else { throw PipelineError.protocolViolation("rank \(assignment.rank) has no next stage") }
            out.tensors = [NamedTensor(Message.TensorName.hidden, h)]
            computeTime += ContinuousClock.now - computeStart
            try send(out, next)
        }
    }

    /// Bytes held by all sequence caches of this stage.
    var cacheBytes: Int { caches.values.reduce(0) { $0 + $1.byteCount } }
}
