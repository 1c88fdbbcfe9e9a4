import FlamingoCore
import FlamingoModel
import Foundation

/// Rank 0's scheduler: admits requests into microbatch groups, sends each group's next step into
/// the pipeline, samples from the logits that come back. Several groups are in flight at once so
/// every stage has work (stage j on group m while stage j+1 is on group m-1); requests join their
/// group between steps (continuous batching) and leave it when done or cancelled.
///
/// For a batch (`generate --requests`), request i goes to group i % groupCount, so the
/// composition of every microbatch, and hence every number, is the same whatever the number of
/// ranks or the timing. A server assigns each new request to the least-loaded group.
struct Coordinator {
    struct Sequence {
        let id: UInt64
        let request: GenerationRequest
        let imageIndex: [Int?]
        var output: SequenceOutput
        var promptLogits: [Float] = []
        var position = 0
        var prefilled = false
        var cancelled = false
    }

    struct Group {
        var waiting: [UInt64] = []
        var active: [UInt64] = []
        var inFlight = false
        var step: UInt32 = 0
        var load: Int { waiting.count + active.count }
    }

    let plan: PipelinePlan
    let batchSize: Int
    private(set) var groups: [Group]
    private var sequences: [UInt64: Sequence] = [:]
    /// Called with (sequence id, token) as tokens are produced.
    var onToken: (UInt64, Int) -> Void = { _, _ in }
    /// Called once per sequence that ends by itself (stop token or length), not on cancel.
    var onFinish: (UInt64, GenerationResult) -> Void = { _, _ in }

    init(plan: PipelinePlan, groupCount: Int, batchSize: Int) {
        self.plan = plan
        self.batchSize = max(1, batchSize)
        groups = Array(repeating: Group(), count: max(1, groupCount))
    }

    /// Nothing waiting, nothing generating.
    var isIdle: Bool { sequences.isEmpty }
    var waitingCount: Int { groups.reduce(0) { $0 + $1.waiting.count } }
    var activeCount: Int { groups.reduce(0) { $0 + $1.active.count } }

    private var firstStage: Int { plan.languageStages.first?.rank ?? 0 }

    /// Queues a request validated at admission as sequence `id` (the engine's, unique for the run);
    /// `group` nil picks the least-loaded group.
    mutating func submit(_ request: GenerationRequest, id: UInt64, imageIndex: [Int?], group: Int? = nil) {
        precondition(sequences[id] == nil, "sequence \(id) submitted twice")
        sequences[id] = Sequence(id: id, request: request, imageIndex: imageIndex, output: SequenceOutput(request))
        let g = group.map { $0 % groups.count } ?? groups.indices.min { groups[$0].load < groups[$1].load }!
        groups[g].waiting.append(id)
    }

    /// Drops a sequence: a waiting one at once; an active one when its current step returns
    /// (its caches are then freed on every stage).
    mutating func cancel(_ id: UInt64, send: (Message, Int) throws -> Void) throws {
        guard sequences[id] != nil else { return }
        for g in groups.indices {
            if let i = groups[g].waiting.firstIndex(of: id) {
                groups[g].waiting.remove(at: i)
                sequences[id] = nil
                return
            }
            if groups[g].active.contains(id) {
                if groups[g].inFlight {
                    sequences[id]!.cancelled = true
                } else {
                    groups[g].active.removeAll { $0 == id }
                    sequences[id] = nil
                    try freeCaches(of: [id], send: send)
                }
                return
            }
        }
    }

    /// Sends the next step of every idle group that has work; a newly admitted request's images
    /// go to the vision stage first (which may be this rank's own).
    mutating func dispatch(send: (Message, Int) throws -> Void) throws {
        for g in groups.indices where !groups[g].inFlight {
            // Admit waiting requests into free slots.
            while groups[g].active.count < batchSize, !groups[g].waiting.isEmpty {
                let id = groups[g].waiting.removeFirst()
                groups[g].active.append(id)
                let request = sequences[id]!.request
                if !request.images.isEmpty {
                    try sendImages(of: id, request: request, send: send)
                }
            }
            guard !groups[g].active.isEmpty else { continue }
            var metas: [SequenceMeta] = []
            var anyPrefill = false
            for id in groups[g].active {
                let s = sequences[id]!
                let imageCount = s.request.images.count
                if !s.prefilled {
                    anyPrefill = true
                    metas.append(SequenceMeta(sequenceID: id, startPosition: 0, tokenCount: s.request.promptTokens.count,
                                              imageIndex: s.imageIndex, imageCount: imageCount, tokenIDs: s.request.promptTokens))
                } else {
                    // A decode step reuses the image-attention row of the last prompt token.
                    metas.append(SequenceMeta(sequenceID: id, startPosition: s.position, tokenCount: 1,
                                              imageIndex: [s.imageIndex.last ?? nil], imageCount: imageCount,
                                              tokenIDs: [s.output.tokens.last!]))
                }
            }
            let message = Message(kind: anyPrefill ? .prefill : .decode, microbatchID: UInt32(g), step: groups[g].step,
                                  sequences: metas)
            groups[g].inFlight = true
            try send(message, firstStage)
        }
    }

    /// Pixels to the vision stage, which sends the visual tokens to every cross-attending stage.
    private func sendImages(of id: UInt64, request: GenerationRequest, send: (Message, Int) throws -> Void) throws {
        let meta = SequenceMeta(sequenceID: id, startPosition: 0, tokenCount: 0, imageCount: request.images.count)
        var message = Message(kind: .visualTokens, requestID: id, sequences: [meta])
        for (i, pixels) in request.images.enumerated() {
            message.tensors.append(NamedTensor("\(Message.TensorName.pixels).\(i)", pixels))
        }
        try send(message, plan.visionRank)
    }

    /// Samples the next token of every sequence in the group the logits belong to.
    mutating func handleLogits(_ message: Message, send: (Message, Int) throws -> Void) throws {
        let g = Int(message.microbatchID)
        guard groups.indices.contains(g), groups[g].inFlight,
              message.sequences.map(\.sequenceID) == groups[g].active,
              let logits = message.tensor(named: Message.TensorName.logits), logits.rank == 2,
              logits.dim(0) == groups[g].active.count else {
            throw PipelineError.protocolViolation("logits for microbatch \(message.microbatchID) do not match what was sent")
        }
        let vocab = logits.dim(1)
        let all = logits.scalars
        var finished: [UInt64] = []
        for (row, id) in groups[g].active.enumerated() {
            var s = sequences[id]!
            if s.cancelled {
                finished.append(id)
                continue
            }
            let rowLogits = Array(all[(row * vocab)..<((row + 1) * vocab)])
            if !s.prefilled {
                s.prefilled = true
                s.position = s.request.promptTokens.count
                s.promptLogits = rowLogits
            } else {
                s.position += 1
            }
            let (token, finish) = s.output.next(logits: rowLogits)
            sequences[id] = s
            onToken(id, token)
            if let finish {
                onFinish(id, GenerationResult(tokens: s.output.tokens, finishReason: finish, promptLogits: s.promptLogits))
                finished.append(id)
            }
        }
        if !finished.isEmpty {
            groups[g].active.removeAll { finished.contains($0) }
            for id in finished { sequences[id] = nil }
            try freeCaches(of: finished, send: send)
        }
        groups[g].inFlight = false
        groups[g].step &+= 1
    }

    /// Frees the sequences' caches on every stage.
    private func freeCaches(of ids: [UInt64], send: (Message, Int) throws -> Void) throws {
        let cancel = Message(kind: .cancel, sequences: ids.map { SequenceMeta(sequenceID: $0, startPosition: 0, tokenCount: 0) })
        for stage in plan.languageStages { try send(cancel, stage.rank) }
    }
}
