import FlamingoCore
import FlamingoModel
import Foundation

// A discrete-event simulation of the pipeline runtime: the real `Coordinator` schedules (the same
// microbatch groups, admission, prefill and decode steps, cancellation), and each rank is a server
// that handles its messages one at a time, in arrival order, as `StageWorker` does: vision turns
// pixels into visual tokens sent to every cross-attending stage, a step waits until its
// sequences' visual tokens are there, runs the stage's layers and goes to the next stage or back
// to rank 0 as logits. Only the compute is replaced, by the calibration's measured costs, and the
// wire by a link model (latency + bytes / bandwidth, each rank sending one message at a time).

/// What to simulate.
public struct SimulationSetup: Sendable {
    public var plan: PipelinePlan
    /// Microbatch groups (nil: the runtime's default, max(4, LM stages)).
    public var microbatches: Int?
    public var batchSize = 8
    /// Clients each sending `requestsPerClient` requests one after another (closed loop).
    public var clients = 1
    public var requestsPerClient = 1
    public var promptTokens = 32
    public var maxTokens = 32
    public var imagesPerRequest = 1
    public var link: LinkCost
    /// Relative speed of each rank (rank order; nil: all 1).
    public var rankSpeeds: [Double]?
    /// Bytes per value of activations on the wire (4: f32, 2: `--wire-bf16`).
    public var wireBytesPerValue = 4
    /// All ranks on one machine, sharing its cores and memory bandwidth: with k ranks computing
    /// at once each runs `sharedHostSlowdown[k-1]` times slower than alone (measured by
    /// `flamingo profile`). Nil: each rank on a machine of its own.
    public var sharedHostSlowdown: [Double]?
    /// The shared machine's cores (with `sharedHostSlowdown`).
    public var sharedHostCores = ProcessInfo.processInfo.activeProcessorCount

    public init(plan: PipelinePlan, link: LinkCost) {
        self.plan = plan
        self.link = link
    }
}

/// What the simulation predicts.
public struct SimulationResult: Codable, Sendable {
    public struct Rank: Codable, Sendable {
        public var rank: Int
        public var role: String
        public var layers: String
        public var busySeconds: Double
        public var utilisation: Double
        public var weightBytes: Int
        public var peakCacheBytes: Int
        public var memoryBytes: Int
        public var bytesSent: Int
    }

    public var requests: Int
    public var generatedTokens: Int
    public var seconds: Double
    public var tokensPerSecond: Double
    /// Mean over requests, from submission to the first token.
    public var timeToFirstTokenSeconds: Double
    /// Mean over requests of (last token - first token) / (tokens - 1).
    public var perTokenLatencySeconds: Double
    /// 1 - (busy seconds of the LM stages) / (stages x run seconds).
    public var bubbleFraction: Double
    public var bytesOnWirePerToken: Double
    public var perRank: [Rank]
}

public enum SimulationError: Error, LocalizedError {
    case invalid(String)
    public var errorDescription: String? {
        switch self { case .invalid(let why): why }
    }
}

/// Runs the simulation of `setup` with `calibration`'s costs for a model of `shape`.
public func simulate(_ setup: SimulationSetup, calibration: Calibration, shape: ModelShape) throws -> SimulationResult {
    guard calibration.hiddenSize == shape.hiddenSize else {
        throw SimulationError.invalid("the calibration is for \(calibration.model) (hidden size \(calibration.hiddenSize)), not \(shape.name) (hidden size \(shape.hiddenSize)): profile this model")
    }
    guard setup.clients >= 1, setup.requestsPerClient >= 1, setup.promptTokens >= 1, setup.maxTokens >= 1, setup.batchSize >= 1,
          setup.imagesPerRequest >= 0 else {
        throw SimulationError.invalid("clients, requests per client, prompt tokens, max tokens and batch size must be at least 1")
    }
    if let speeds = setup.rankSpeeds, speeds.count != setup.plan.stages.count {
        throw SimulationError.invalid("\(speeds.count) rank speed(s) given for \(setup.plan.stages.count) rank(s)")
    }
    var simulator = PipelineSimulator(setup: setup, calibration: calibration, shape: shape)
    return try simulator.run()
}

/// The event loop. Time is in seconds from the first submission.
struct PipelineSimulator {
    let setup: SimulationSetup
    let calibration: Calibration
    let shape: ModelShape
    let plan: PipelinePlan

    /// One rank (or a tensor-parallel group, simulated at its leader).
    struct RankState {
        var queue: [Message] = []
        var busy = false
        var busySeconds = 0.0
        /// The message being handled, and its work left in seconds at full speed.
        var current: Message?
        var remaining = 0.0
        /// Of the current message's work, the share that streams weights (bound by memory
        /// bandwidth when ranks share a machine); the rest is compute (bound by cores).
        var streamingShare = 0.0
        /// Bumped when its completion is rescheduled (older `done` events are stale).
        var version = 0
        /// When its outgoing link is free again.
        var linkFree = 0.0
        var bytesSent = 0
        /// Images attached per sequence (cross-attending stages).
        var images: [UInt64: Int] = [:]
        /// Cached tokens per sequence.
        var tokens: [UInt64: Int] = [:]
        var deferred: [Message] = []
        var peakCacheBytes = 0
    }

    enum EventKind {
        case arrive(rank: Int, Message)
        case done(rank: Int, version: Int)
        case submit(client: Int)
    }

    struct Event {
        var time: Double
        var order: Int
        var kind: EventKind
    }

    /// Shared with the coordinator's callbacks.
    final class Clock {
        var now = 0.0
        var submitted: [UInt64: Double] = [:]
        var firstToken: [UInt64: Double] = [:]
        var finished: [UInt64: (time: Double, tokens: Int)] = [:]
        var clientOf: [UInt64: Int] = [:]
        var finishedClients: [Int] = []
    }

    private var events: [Event] = []
    private var order = 0
    private var ranks: [RankState]
    private var coordinator: Coordinator
    private let clock = Clock()
    private var nextID: UInt64 = 1
    private var sentByClient: [Int]

    init(setup: SimulationSetup, calibration: Calibration, shape: ModelShape) {
        self.setup = setup
        self.calibration = calibration
        self.shape = shape
        plan = setup.plan
        ranks = Array(repeating: RankState(), count: plan.stages.count)
        coordinator = Coordinator(plan: plan, groupCount: setup.microbatches ?? max(4, plan.languageStages.count),
                                  batchSize: setup.batchSize)
        sentByClient = Array(repeating: 0, count: setup.clients)
    }

    mutating func run() throws -> SimulationResult {
        let clock = self.clock
        coordinator.onToken = { id, _ in
            if clock.firstToken[id] == nil { clock.firstToken[id] = clock.now }
        }
        coordinator.onFinish = { id, result in
            clock.finished[id] = (clock.now, result.tokens.count)
            if let c = clock.clientOf[id] { clock.finishedClients.append(c) }
        }
        // Every client's first request is there before the first dispatch (as a batch is).
        for c in 0..<setup.clients { submit(client: c) }
        try coordinate { try $0.dispatch(send: $1) }
        while !events.isEmpty {
            let event = events.removeFirst()
            clock.now = event.time
            switch event.kind {
            case .submit(let client):
                submit(client: client)
                // The engine admits between the messages it handles: while rank 0 computes, at the end of that.
                if !ranks[0].busy { try coordinate { try $0.dispatch(send: $1) } }
            case .arrive(let rank, let message):
                ranks[rank].queue.append(message)
                startNext(rank)
            case .done(let rank, let version):
                guard ranks[rank].busy, ranks[rank].version == version, let message = ranks[rank].current else { continue }
                shareProgress()
                ranks[rank].busy = false
                ranks[rank].current = nil
                try finish(message, at: rank)
                startNext(rank)
                rescheduleShared()
            }
            // A client whose request finished sends its next one at once.
            let ready = clock.finishedClients
            clock.finishedClients = []
            for c in ready where sentByClient[c] < setup.requestsPerClient { schedule(at: clock.now, .submit(client: c)) }
        }
        guard coordinator.isIdle else {
            throw SimulationError.invalid("the simulated pipeline stalled with requests left (a stage waits for visual tokens that never come)")
        }
        // Until the last token (the cache frees that follow are not part of the run).
        return result(seconds: clock.finished.values.map(\.time).max() ?? 0)
    }

    // MARK: Events

    private mutating func schedule(at time: Double, _ kind: EventKind) {
        let event = Event(time: time, order: order, kind: kind)
        order += 1
        // Sorted by time, then by order of scheduling (FIFO for equal times).
        var low = 0, high = events.count
        while low < high {
            let mid = (low + high) / 2
            if events[mid].time <= time { low = mid + 1 } else { high = mid }
        }
        events.insert(event, at: low)
    }

    private mutating func submit(client: Int) {
        sentByClient[client] += 1
        let id = nextID
        nextID += 1
        let imageToken = 1
        var prompt = [Int](repeating: 2, count: setup.promptTokens)
        for i in 0..<min(setup.imagesPerRequest, prompt.count) { prompt[i] = imageToken }
        let images = [Tensor](repeating: Tensor(zeros: [1]), count: setup.imagesPerRequest)
        let request = GenerationRequest(promptTokens: prompt, images: images, maxTokens: setup.maxTokens,
                                        sampling: .greedy, stopTokens: [])
        // Each prompt token attends to the last image before it (the masking rule's usual case).
        let index: [Int?] = prompt.indices.map { setup.imagesPerRequest == 0 ? nil : min($0, setup.imagesPerRequest - 1) }
        clock.submitted[id] = clock.now
        clock.clientOf[id] = client
        coordinator.submit(request, id: id, imageIndex: index)
    }

    /// What a rank's send does: the message arrives after the link's time (now if to itself).
    private mutating func send(_ message: Message, to rank: Int) {
        let from = sendingRank
        let bytes = wireBytes(message)
        if from == rank {
            schedule(at: clock.now, .arrive(rank: rank, message))
            return
        }
        let start = max(clock.now, ranks[from].linkFree)
        let transfer = Double(bytes) / setup.link.bytesPerSecond
        ranks[from].linkFree = start + transfer
        ranks[from].bytesSent += bytes
        schedule(at: start + transfer + setup.link.latencySeconds, .arrive(rank: rank, message))
    }

    /// Runs the coordinator with a send that the link model delivers (from rank 0).
    private mutating func coordinate(_ body: (inout Coordinator, (Message, Int) throws -> Void) throws -> Void) throws {
        var sends: [(Message, Int)] = []
        try body(&coordinator) { sends.append(($0, $1)) }
        for (m, target) in sends { send(m, to: target) }
    }

    /// The rank that is handling a message now is the one sending what it produces; the
    /// coordinator sends from rank 0.
    private var sendingRank = 0

    private mutating func startNext(_ rank: Int) {
        guard !ranks[rank].busy, !ranks[rank].queue.isEmpty else { return }
        let message = ranks[rank].queue.removeFirst()
        let seconds = cost(of: message, at: rank)
        shareProgress()
        ranks[rank].busy = true
        ranks[rank].current = message
        ranks[rank].remaining = seconds
        ranks[rank].streamingShare = streamingShare(of: message, at: rank)
        ranks[rank].version += 1
        if setup.sharedHostSlowdown == nil {
            ranks[rank].busySeconds += seconds
            schedule(at: clock.now + seconds, .done(rank: rank, version: ranks[rank].version))
        } else {
            rescheduleShared()
        }
    }

    // MARK: Ranks sharing one machine (processor sharing)

    private var sharedUpTo = 0.0

    /// How much slower computing rank `r` runs now, with k ranks computing (a tensor-parallel
    /// stage counts its ranks): its weight-streaming share at the measured slowdown of k decoding
    /// ranks (`sharedHostSlowdown`, memory bandwidth and cores), its compute share at the cores'
    /// alone (k·t/c once k·t exceeds the c cores).
    private func sharedSlowdown(_ r: Int) -> Double {
        guard let table = setup.sharedHostSlowdown, !table.isEmpty else { return 1 }
        let k = ranks.indices.filter { ranks[$0].busy && ranks[$0].remaining > 0 }
            .reduce(0) { $0 + max(1, plan.stages[$1].tensorParallelSize) }
        guard k > 1 else { return 1 }
        let streaming = k <= table.count ? table[k - 1] : table[table.count - 1] * Double(k) / Double(table.count)
        let cores = max(1, setup.sharedHostCores), threads = max(1, calibration.machine.threads)
        let compute = max(1, Double(k * threads) / Double(cores))
        let m = ranks[r].streamingShare
        return m * streaming + (1 - m) * compute
    }

    /// The weight-streaming share of a message's work: a step's 1-token cost (the weights read
    /// once) against its cost at its size; vision and attaching images are compute.
    private func streamingShare(of message: Message, at rank: Int) -> Double {
        guard setup.sharedHostSlowdown != nil, message.kind == .prefill || message.kind == .decode else { return 0 }
        let stage = plan.stages[rank]
        let tokens = message.sequences.reduce(0) { $0 + $1.tokenCount }
        func cost(_ t: Int) -> Double {
            Double(stage.layers.count) * calibration.decoderLayer.seconds(tokens: t)
                + Double(stage.crossBlocks) * calibration.crossAttentionBlock.seconds(tokens: t)
                + (stage.outputHead ? calibration.outputHead.seconds(tokens: min(t, message.sequences.count)) : 0)
        }
        let total = cost(tokens)
        return total > 0 ? min(1, cost(1) / total) : 0
    }

    /// Brings the computing ranks' work left up to now, at the rate they shared since the last change.
    private mutating func shareProgress() {
        guard setup.sharedHostSlowdown != nil else { return }
        let elapsed = clock.now - sharedUpTo
        sharedUpTo = clock.now
        guard elapsed > 0 else { return }
        let rates = ranks.indices.map { 1 / sharedSlowdown($0) }
        for r in ranks.indices where ranks[r].busy {
            if ranks[r].remaining > 0 { ranks[r].busySeconds += elapsed }
            ranks[r].remaining -= elapsed * rates[r]
        }
    }

    /// After the set of computing ranks changed: when each will finish at the new shared rate.
    private mutating func rescheduleShared() {
        guard setup.sharedHostSlowdown != nil else { return }
        for r in ranks.indices where ranks[r].busy {
            ranks[r].version += 1
            schedule(at: clock.now + max(0, ranks[r].remaining) * sharedSlowdown(r), .done(rank: r, version: ranks[r].version))
        }
    }

    // MARK: What a rank does

    /// A rank's relative speed; a tensor-parallel group runs at its slowest member's.
    private func speed(_ rank: Int) -> Double {
        guard let speeds = setup.rankSpeeds else { return 1 }
        let stage = plan.stages[rank]
        return stage.layers.isEmpty ? speeds[rank] : plan.tensorGroup(of: stage).map { speeds[$0] }.min()!
    }

    /// Seconds `rank` computes on `message`.
    private func cost(of message: Message, at rank: Int) -> Double {
        let stage = plan.stages[rank]
        switch message.kind {
        case .visualTokens:
            let count = message.sequences.first?.imageCount ?? 0
            if message.tensors.contains(where: { $0.name.hasPrefix(Message.TensorName.pixels) }) {
                return Double(message.tensors.count) * calibration.visionSecondsPerImage / speed(rank)
            }
            return Double(count * stage.crossBlocks) * calibration.imageAttachSecondsPerBlock / Double(stage.tensorParallelSize) / speed(rank)
        case .prefill, .decode:
            if needsImages(message, at: rank) { return 0 }
            return stepSeconds(message, stage: stage) / speed(rank)
        default:
            return 0  // logits on rank 0 (sampling), cancel
        }
    }

    private func needsImages(_ message: Message, at rank: Int) -> Bool {
        guard plan.stages[rank].crossBlocks > 0 else { return false }
        return message.sequences.contains { (ranks[rank].images[$0.sequenceID] ?? 0) < $0.imageCount }
    }

    /// A stage's layers on one step: every decoder layer, every block, the head on the last stage;
    /// with tensor parallelism a 1/N share plus the group's broadcast of the input and two
    /// allreduces per layer and per block.
    func stepSeconds(_ message: Message, stage: StageAssignment) -> Double {
        let tokens = message.sequences.reduce(0) { $0 + $1.tokenCount }
        let selfPairs = message.sequences.reduce(0.0) { total, s in
            total + Double(s.tokenCount) * Double(s.startPosition) + Double(s.tokenCount * (s.tokenCount + 1)) / 2
        }
        let crossPairs = Double(tokens * calibration.visualTokensPerImage)
        let layers = Double(stage.layers.count), blocks = Double(stage.crossBlocks)
        let seconds = layers * calibration.decoderLayer.seconds(tokens: tokens, attendedPairs: selfPairs)
            + blocks * calibration.crossAttentionBlock.seconds(tokens: tokens, attendedPairs: crossPairs)
        let head = stage.outputHead ? calibration.outputHead.seconds(tokens: message.sequences.count) : 0
        let n = stage.tensorParallelSize
        guard n > 1 else { return seconds + head }
        // The leader sends the step's input to each member, then all compute their share, with an
        // allreduce per branch (attention and MLP of every layer and block); the leader runs the head.
        let activation = tokens * calibration.hiddenSize * 4
        let allreduce = setup.link.allreduceSeconds(bytes: activation, ranks: n)
        let fanOut = Double(n - 1) * Double(activation) / setup.link.bytesPerSecond + setup.link.latencySeconds
        return seconds / Double(n) + (2 * layers + 2 * blocks) * allreduce + fanOut + head
    }

    /// Applies a handled message's effects at `rank`, as `StageWorker.handle` and the engine do.
    private mutating func finish(_ message: Message, at rank: Int) throws {
        sendingRank = rank
        defer { sendingRank = 0 }
        let stage = plan.stages[rank]
        var sends: [(Message, Int)] = []
        switch message.kind {
        case .logits:
            try coordinate { try $0.handleLogits(message, send: $1) }
        case .visualTokens:
            if message.tensors.contains(where: { $0.name.hasPrefix(Message.TensorName.pixels) }) {
                var out = Message(kind: .visualTokens, requestID: message.requestID, sequences: message.sequences)
                out.sequences[0].imageCount = message.tensors.count
                for target in plan.languageStages where target.crossBlocks > 0 { sends.append((out, target.rank)) }
            } else if let s = message.sequences.first {
                ranks[rank].images[s.sequenceID, default: 0] += s.imageCount
                ranks[rank].peakCacheBytes = max(ranks[rank].peakCacheBytes, cacheBytes(rank))
                // Steps that waited for these visual tokens run next, in the order they came.
                let waiting = ranks[rank].deferred
                ranks[rank].deferred = []
                ranks[rank].queue.insert(contentsOf: waiting, at: 0)
            }
        case .prefill, .decode:
            if needsImages(message, at: rank) {
                ranks[rank].deferred.append(message)
                break
            }
            for s in message.sequences { ranks[rank].tokens[s.sequenceID, default: 0] += s.tokenCount }
            ranks[rank].peakCacheBytes = max(ranks[rank].peakCacheBytes, cacheBytes(rank))
            var out = message
            if stage.outputHead {
                out.kind = .logits
                out.tensors = [NamedTensor(Message.TensorName.logits, Tensor(zeros: [message.sequences.count, 1]))]
                sends.append((out, 0))
            } else {
                let lm = plan.languageStages
                let next = lm[lm.firstIndex { $0.rank == rank }! + 1].rank
                sends.append((out, next))
            }
        case .cancel:
            for s in message.sequences {
                ranks[rank].images[s.sequenceID] = nil
                ranks[rank].tokens[s.sequenceID] = nil
            }
        default:
            break
        }
        for (m, target) in sends { send(m, to: target) }
        sendingRank = 0
        if rank == 0 { try coordinate { try $0.dispatch(send: $1) } }
    }

    private func cacheBytes(_ rank: Int) -> Int {
        let stage = plan.stages[rank]
        let tokens = ranks[rank].tokens.values.reduce(0, +), images = ranks[rank].images.values.reduce(0, +)
        return (tokens * stage.layers.count * calibration.cacheBytesPerTokenPerLayer
            + images * stage.crossBlocks * calibration.cacheBytesPerImagePerBlock) / stage.tensorParallelSize
    }

    /// Bytes a message takes on the wire (its tensors; about 64 bytes of header and metadata per sequence).
    private func wireBytes(_ message: Message) -> Int {
        let header = 64 + 64 * message.sequences.count
        let tokens = message.sequences.reduce(0) { $0 + $1.tokenCount }
        switch message.kind {
        case .visualTokens:
            if message.tensors.contains(where: { $0.name.hasPrefix(Message.TensorName.pixels) }) {
                return header + message.tensors.count * calibration.pixelBytesPerImage
            }
            return header + (message.sequences.first?.imageCount ?? 0) * calibration.visualTokensPerImage * calibration.visualTokenWidth * 4
        case .prefill, .decode:
            let ids = message.sequences.reduce(0) { $0 + $1.tokenIDs.count * 8 }
            return header + ids + tokens * calibration.hiddenSize * setup.wireBytesPerValue
        case .logits:
            return header + message.sequences.count * calibration.vocabularySize * 4
        default:
            return header
        }
    }

    private func result(seconds: Double) -> SimulationResult {
        let ids = clock.finished.keys.sorted()  // a fixed order: the same sums, to the bit, every run
        let tokens = clock.finished.values.reduce(0) { $0 + $1.tokens }
        let ttft = ids.map { clock.firstToken[$0]! - clock.submitted[$0]! }
        let perToken = ids.compactMap { id -> Double? in
            let f = clock.finished[id]!
            return f.tokens > 1 ? (f.time - clock.firstToken[id]!) / Double(f.tokens - 1) : nil
        }
        func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }
        let lm = plan.languageStages.map(\.rank)
        let busyLM = lm.reduce(0.0) { $0 + ranks[$1].busySeconds }
        let sent = ranks.reduce(0) { $0 + $1.bytesSent }
        let perRank = plan.stages.map { s -> SimulationResult.Rank in
            // A tensor-parallel member is busy when its leader is.
            let leader = s.layers.isEmpty ? s.rank : plan.tensorGroup(of: s)[0]
            let busy = ranks[leader].busySeconds
            let cache = ranks[leader].peakCacheBytes
            return SimulationResult.Rank(
                rank: s.rank, role: s.role, layers: s.layers.isEmpty ? "-" : "\(s.layers.lowerBound)-\(s.layers.upperBound - 1)",
                busySeconds: busy, utilisation: seconds > 0 ? busy / seconds : 0, weightBytes: s.weightBytes,
                peakCacheBytes: cache, memoryBytes: s.weightBytes + cache, bytesSent: ranks[s.rank].bytesSent)
        }
        return SimulationResult(
            requests: ids.count, generatedTokens: tokens, seconds: seconds,
            tokensPerSecond: seconds > 0 ? Double(tokens) / seconds : 0,
            timeToFirstTokenSeconds: mean(ttft), perTokenLatencySeconds: mean(perToken),
            bubbleFraction: seconds > 0 && !lm.isEmpty ? 1 - busyLM / (Double(lm.count) * seconds) : 0,
            bytesOnWirePerToken: tokens > 0 ? Double(sent) / Double(tokens) : 0, perRank: perRank)
    }
}
