import FlamingoCore
import FlamingoModel
import Foundation

/// Rank 0's scheduler: admits requests into microbatch groups, sends each group's next step into
/// the pipeline, samples from the logits that come back. Several groups are in flight at once so
/// every stage has work (stage j on group m while stage j+1 is on group m-1); a request joins its
/// group between steps.
///
/// Request i goes to group i % groupCount, so for a fixed request list the composition of every
/// microbatch, and hence every number, is the same whatever the number of ranks or the timing.
struct Coordinator {
    struct Sequence {
        let id: UInt64
        let requestIndex: Int
        let request: GenerationRequest
        let imageIndex: [Int?]
        var sampler: Sampler
        var generated: [Int] = []
        var promptLogits: [Float] = []
        /// Tokens sent but not yet answered by logits.
        var position = 0
        var prefilled = false
    }

    struct Group {
        var waiting: [Int] = []
        var active: [UInt64] = []
        var inFlight = false
        var step: UInt32 = 0
    }

    let plan: PipelinePlan
    let batchSize: Int
    private(set) var groups: [Group]
    private var sequences: [UInt64: Sequence] = [:]
    private(set) var results: [Int: GenerationResult] = [:]
    private let requests: [GenerationRequest]
    private let imageIndices: [[Int?]]
    /// Called with (request index, token) as tokens are produced.
    var onToken: ((Int, Int) -> Void)?

    init(plan: PipelinePlan, requests: [GenerationRequest], imageIndices: [[Int?]], groupCount: Int, batchSize: Int) {
        self.plan = plan
        self.requests = requests
        self.imageIndices = imageIndices
        self.batchSize = max(1, batchSize)
        groups = Array(repeating: Group(), count: max(1, groupCount))
        for i in requests.indices { groups[i % groups.count].waiting.append(i) }
    }

    var isFinished: Bool { results.count == requests.count }
    var inFlightCount: Int { groups.filter(\.inFlight).count }

    private var firstStage: Int { plan.languageStages.first?.rank ?? 0 }
    private var crossAttendingRanks: [Int] { plan.languageStages.filter { $0.crossBlocks > 0 }.map(\.rank) }

    /// Sends the next step of every idle group that has work. `visualTokens` computes an image's
    /// visual tokens when rank 0 holds the vision encoder (else pixels go to the vision rank).
    mutating func dispatch(send: (Message, Int) throws -> Void, visualTokens: ((Tensor) -> Tensor)?) throws {
        for g in groups.indices where !groups[g].inFlight {
            // Admit waiting requests into free slots.
            while groups[g].active.count < batchSize, !groups[g].waiting.isEmpty {
                let index = groups[g].waiting.removeFirst()
                let request = requests[index]
                let id = UInt64(index + 1)
                sequences[id] = Sequence(id: id, requestIndex: index, request: request, imageIndex: imageIndices[index],
                                         sampler: Sampler(request.sampling))
                groups[g].active.append(id)
                if !request.images.isEmpty {
                    try sendImages(of: id, request: request, send: send, visualTokens: visualTokens)
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
                                              tokenIDs: [s.generated.last!]))
                }
            }
            let message = Message(kind: anyPrefill ? .prefill : .decode, microbatchID: UInt32(g), step: groups[g].step,
                                  sequences: metas)
            groups[g].inFlight = true
            try send(message, firstStage)
        }
    }

    private func sendImages(of id: UInt64, request: GenerationRequest, send: (Message, Int) throws -> Void,
                            visualTokens: ((Tensor) -> Tensor)?) throws {
        let meta = SequenceMeta(sequenceID: id, startPosition: 0, tokenCount: 0, imageCount: request.images.count)
        if let visualTokens {
            var message = Message(kind: .visualTokens, requestID: id, sequences: [meta])
            for (i, pixels) in request.images.enumerated() {
                message.tensors.append(NamedTensor(Message.TensorName.visualTokens(image: i), visualTokens(pixels)))
            }
            for rank in crossAttendingRanks { try send(message, rank) }
        } else {
            var message = Message(kind: .visualTokens, requestID: id, sequences: [meta])
            for (i, pixels) in request.images.enumerated() {
                message.tensors.append(NamedTensor("\(Message.TensorName.pixels).\(i)", pixels))
            }
            try send(message, plan.visionRank)
        }
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
            let rowLogits = Array(all[(row * vocab)..<((row + 1) * vocab)])
            if !s.prefilled {
                s.prefilled = true
                s.position = s.request.promptTokens.count
                s.promptLogits = rowLogits
            } else {
                s.position += 1
            }
            let token = s.sampler.next(logits: rowLogits)
            s.generated.append(token)
            onToken?(s.requestIndex, token)
            let stopped = s.request.stopTokens.contains(token)
            if stopped || s.generated.count >= s.request.maxTokens {
                results[s.requestIndex] = GenerationResult(tokens: s.generated, finishReason: stopped ? .stop : .length,
                                                           promptLogits: s.promptLogits)
                finished.append(id)
            }
            sequences[id] = s
        }
        if !finished.isEmpty {
            groups[g].active.removeAll { finished.contains($0) }
            for id in finished { sequences[id] = nil }
            // Free the finished sequences' caches on every stage.
            let cancel = Message(kind: .cancel, sequences: finished.map { SequenceMeta(sequenceID: $0, startPosition: 0, tokenCount: 0) })
            for stage in plan.languageStages { try send(cancel, stage.rank) }
        }
        groups[g].inFlight = false
        groups[g].step &+= 1
    }
}
