import Foundation

/// What one rank does in a pipeline.
public struct StageAssignment: Sendable, Codable, Equatable {
    public var rank: Int
    /// Rank 0 tokenizes, decodes images, schedules, samples and serves.
    public var coordinator: Bool
    /// Vision encoder + Perceiver Resampler.
    public var vision: Bool
    public var embedding: Bool
    /// LM layers (each with the gated cross-attention block before it, if any).
    public var layers: Range<Int>
    public var outputHead: Bool
    public var crossBlocks: Int
    public var weightBytes: Int
    /// Memory left for KV caches within the rank's budget (nil when no budget was given).
    public var cacheBudgetBytes: Int?
    /// Estimated milliseconds per generated token spent in this stage.
    public var estimatedMillisecondsPerToken: Double
    /// With tensor parallelism, this rank's place in its stage's group (0 = the group's leader,
    /// which receives the stage's input and sends its output) and the group's size.
    public var tensorParallelRank = 0
    public var tensorParallelSize = 1

    public var role: String {
        var parts: [String] = []
        if coordinator { parts.append("coordinator") }
        if vision { parts.append("vision+resampler") }
        if embedding { parts.append("embeddings") }
        if !layers.isEmpty { parts.append(tensorParallelSize > 1 ? "LM layers (tp \(tensorParallelRank)/\(tensorParallelSize))" : "LM layers") }
        if outputHead { parts.append("norm+head") }
        return parts.isEmpty ? "idle" : parts.joined(separator: ", ")
    }
}

public struct PipelinePlan: Sendable, Codable, Equatable {
    public var model: String
    public var stages: [StageAssignment]

    /// Ranks owning LM layers, in pipeline order: one per stage, its tensor-parallel group's leader.
    public var languageStages: [StageAssignment] { stages.filter { !$0.layers.isEmpty && $0.tensorParallelRank == 0 } }
    /// The ranks of `stage`'s tensor-parallel group (the leader first).
    public func tensorGroup(of stage: StageAssignment) -> [Int] {
        stages.filter { !$0.layers.isEmpty && $0.layers == stage.layers }.map(\.rank)
    }
    /// Ranks per LM stage.
    public var tensorParallel: Int { stages.first { !$0.layers.isEmpty }?.tensorParallelSize ?? 1 }
    public var visionRank: Int { stages.first { $0.vision }?.rank ?? 0 }
}

public enum PlanError: Error, LocalizedError, Equatable {
    case tooFewRanks(needed: Int, given: Int, reason: String)
    case invalid(String)

    public var errorDescription: String? {
        switch self {
        case .tooFewRanks(let needed, let given, let reason):
            "the model does not fit on \(given) rank(s): \(reason); it needs at least \(needed) ranks"
        case .invalid(let why): why
        }
    }
}

/// Throughputs the time estimates assume: a CPU node streaming weights at `memoryGBps` and
/// multiplying at `gflops`. Only ratios between stages matter for balance.
public struct CostModel: Sendable {
    public var memoryGBps: Double = 20
    public var gflops: Double = 100
    /// One allreduce of a decode step's activations within a tensor-parallel group.
    public var allreduceMilliseconds: Double = 0.1
    public init() {}

    func millisecondsPerToken(bytes: Int, macs: Int) -> Double {
        max(Double(bytes) / (memoryGBps * 1e9), 2 * Double(macs) / (gflops * 1e9)) * 1000
    }
}

/// Splits a model over `ranks`: rank 0 coordinates and (by default) runs vision + resampler;
/// the other ranks each take a contiguous group of LM layers with their cross-attention blocks,
/// embeddings on the first, norm + head on the last. With one rank, rank 0 holds everything.
/// `visionOwnRank` moves vision to rank 1 and the LM to ranks 2...
///
/// The split is exact, not greedy: it minimises the slowest stage's estimated time per token
/// (`balancedSplit`), each stage's time being its layers' (and the head's) cost divided by its
/// rank's relative speed (`rankSpeeds`, rank order, 1 = the cost model's machine), within
/// `memoryPerRank` (weights + `reservePerRank` for caches and runtime); among the splits with that
/// bottleneck it takes the most even one.
///
/// `tensorParallel` N > 1 makes each LM stage a group of N consecutive ranks that split its layers
/// (attention heads, MLP and head columns); a group runs at its slowest rank's speed, and its
/// time is a 1/N share plus two allreduces per layer and per block.
public func plan(shape: ModelShape, ranks: Int, memoryPerRank: Int? = nil, visionOwnRank: Bool = false,
                 rankSpeeds: [Double]? = nil, tensorParallel: Int = 1, reservePerRank: Int = PlanDefaults.reservePerRank,
                 cost: CostModel = CostModel()) throws -> PipelinePlan {
    guard ranks >= 1 else { throw PlanError.invalid("need at least one rank") }
    guard tensorParallel >= 1 else { throw PlanError.invalid("--tp must be at least 1") }
    if let rankSpeeds {
        guard rankSpeeds.count == ranks else {
            throw PlanError.invalid("\(rankSpeeds.count) rank speed(s) given for \(ranks) rank(s)")
        }
        guard rankSpeeds.allSatisfy({ $0 > 0 && $0.isFinite }) else { throw PlanError.invalid("rank speeds must be positive") }
    }
    let costs = StageCosts(shape: shape, cost: cost, tensorParallel: tensorParallel)
    let usable = memoryPerRank.map { $0 - reservePerRank }

    if tensorParallel > 1 {
        let lmRanks = ranks - (visionOwnRank ? 2 : 1)
        guard lmRanks >= tensorParallel, lmRanks % tensorParallel == 0 else {
            throw PlanError.invalid("--tp \(tensorParallel) needs the LM ranks (\(lmRanks) of \(ranks): all but the coordinator\(visionOwnRank ? " and the vision rank" : "")) to be a multiple of \(tensorParallel); use \(ranks - lmRanks + max(1, (lmRanks + tensorParallel - 1) / tensorParallel) * tensorParallel) ranks")
        }
    }
    if ranks == 1 {
        let total = shape.visionBytes + costs.bytes(0..<shape.layerCount)
        if let usable, total > usable {
            throw PlanError.tooFewRanks(needed: try minimumRanks(costs, usable: usable, visionOwnRank: visionOwnRank), given: ranks,
                                        reason: "\(gib(total)) of weights on one rank of \(gib(memoryPerRank!))")
        }
        return PipelinePlan(model: shape.name, stages: [
            StageAssignment(rank: 0, coordinator: true, vision: true, embedding: true, layers: 0..<shape.layerCount,
                            outputHead: true, crossBlocks: shape.crossBlockCount, weightBytes: total,
                            cacheBudgetBytes: usable.map { $0 - total },
                            estimatedMillisecondsPerToken: costs.time(0..<shape.layerCount) / (rankSpeeds?[0] ?? 1))
        ])
    }
    if visionOwnRank && ranks < 3 {
        throw PlanError.invalid("a vision rank of its own needs at least 3 ranks (coordinator, vision, LM)")
    }
    if let usable, shape.visionBytes > usable {
        throw PlanError.invalid("the vision encoder and resampler (\(gib(shape.visionBytes))) alone exceed \(gib(memoryPerRank!)) per rank")
    }
    let firstLM = visionOwnRank ? 2 : 1
    let groupRanks = stride(from: firstLM, to: ranks, by: tensorParallel).map { $0..<($0 + tensorParallel) }
    let speeds = groupRanks.map { group in group.map { rankSpeeds?[$0] ?? 1 }.min()! }
    guard let ranges = balancedSplit(costs, stageSpeeds: speeds, usable: usable) else {
        let needed = try minimumRanks(costs, usable: usable ?? .max, visionOwnRank: visionOwnRank)
        throw PlanError.tooFewRanks(needed: needed, given: ranks,
                                    reason: "\(gib(costs.bytes(0..<shape.layerCount))) of LM weights over \(ranks - firstLM) LM rank(s) of \(gib(memoryPerRank ?? 0))")
    }

    var stages: [StageAssignment] = []
    let coordinatorHasVision = !visionOwnRank
    stages.append(StageAssignment(rank: 0, coordinator: true, vision: coordinatorHasVision, embedding: false, layers: 0..<0,
                                  outputHead: false, crossBlocks: 0, weightBytes: coordinatorHasVision ? shape.visionBytes : 0,
                                  cacheBudgetBytes: usable.map { $0 - (coordinatorHasVision ? shape.visionBytes : 0) },
                                  estimatedMillisecondsPerToken: 0))
    if visionOwnRank {
        stages.append(StageAssignment(rank: 1, coordinator: false, vision: true, embedding: false, layers: 0..<0,
                                      outputHead: false, crossBlocks: 0, weightBytes: shape.visionBytes,
                                      cacheBudgetBytes: usable.map { $0 - shape.visionBytes }, estimatedMillisecondsPerToken: 0))
    }
    for (g, range) in ranges.enumerated() {
        for (k, rank) in groupRanks[g].enumerated() {
            // Only the leader (k = 0) embeds and runs the head; the others hold their share of the layers.
            let leader = k == 0
            let bytes = leader ? costs.bytes(range) : costs.layerShareBytes(range)
            stages.append(StageAssignment(rank: rank, coordinator: false, vision: false,
                                          embedding: leader && !range.isEmpty && range.lowerBound == 0, layers: range,
                                          outputHead: leader && !range.isEmpty && range.upperBound == shape.layerCount,
                                          crossBlocks: range.filter(shape.hasCrossBlock).count,
                                          weightBytes: bytes, cacheBudgetBytes: usable.map { $0 - bytes },
                                          estimatedMillisecondsPerToken: costs.time(range) / speeds[g],
                                          tensorParallelRank: k, tensorParallelSize: tensorParallel))
        }
    }
    return PipelinePlan(model: shape.name, stages: stages)
}

/// A contiguous layer range's weight bytes per rank (embeddings with layer 0, norm + head with the
/// last layer, a tied table once; with tensor parallelism N, 1/N of the layers, the embeddings and
/// head whole on the group's leader) and estimated milliseconds per token at speed 1, from prefix sums.
/// The layers' share is 1/N of their bytes, rounded up; norms and gates (a few KiB a layer) are
/// in fact whole on every rank.
public struct StageCosts: Sendable {
    public let layerCount: Int
    private let bytePrefix: [Int]
    private let timePrefix: [Double]
    private let embeddingBytes: Int, headBytes: Int, headTime: Double, headSharesEmbedding: Bool

    public init(shape: ModelShape, cost: CostModel, tensorParallel n: Int = 1) {
        layerCount = shape.layerCount
        var bytes = [0], time = [0.0]
        let allreduces = n > 1 ? cost.allreduceMilliseconds : 0
        for i in 0..<shape.layerCount {
            bytes.append(bytes[i] + (shape.layerBytes[i] + n - 1) / n)
            let share = cost.millisecondsPerToken(bytes: shape.layerBytesPerToken[i], macs: shape.layerMACsPerToken[i]) / Double(n)
            time.append(time[i] + share + allreduces * (shape.hasCrossBlock(beforeLayer: i) ? 4 : 2))
        }
        bytePrefix = bytes
        timePrefix = time
        embeddingBytes = shape.embeddingBytes
        // The group's leader holds embeddings and head whole and runs the head alone.
        headBytes = shape.headBytes
        headTime = cost.millisecondsPerToken(bytes: shape.headBytes, macs: shape.headMACsPerToken)
        headSharesEmbedding = shape.headSharesEmbedding
    }

    /// Stage timings given directly (tests): layer i costs `layerTimes[i]` and `layerBytes[i]`.
    public init(layerTimes: [Double], layerBytes: [Int], headTime: Double = 0, headBytes: Int = 0, embeddingBytes: Int = 0) {
        layerCount = layerTimes.count
        timePrefix = layerTimes.reduce(into: [0.0]) { $0.append($0.last! + $1) }
        bytePrefix = layerBytes.reduce(into: [0]) { $0.append($0.last! + $1) }
        self.embeddingBytes = embeddingBytes
        self.headBytes = headBytes
        self.headTime = headTime
        headSharesEmbedding = false
    }

    public func time(_ r: Range<Int>) -> Double {
        guard !r.isEmpty else { return 0 }
        return timePrefix[r.upperBound] - timePrefix[r.lowerBound] + (r.upperBound == layerCount ? headTime : 0)
    }

    /// The layers' bytes alone (a tensor-parallel member's share).
    public func layerShareBytes(_ r: Range<Int>) -> Int {
        r.isEmpty ? 0 : bytePrefix[r.upperBound] - bytePrefix[r.lowerBound]
    }

    public func bytes(_ r: Range<Int>) -> Int {
        guard !r.isEmpty else { return 0 }
        let first = r.lowerBound == 0, last = r.upperBound == layerCount
        return bytePrefix[r.upperBound] - bytePrefix[r.lowerBound] + (first ? embeddingBytes : 0) + (last ? headBytes : 0)
            - (first && last && headSharesEmbedding ? embeddingBytes : 0)
    }
}

/// The exact split of layers 0..<L into contiguous ranges, one per stage in order (trailing stages
/// may stay empty when there are more stages than it pays to use), that minimises the slowest
/// stage's time (time of stage s = cost / `stageSpeeds[s]`), each stage within `usable` bytes;
/// among those, the one with the smallest sum of squared stage times (the most even). Two dynamic
/// programmes over (stages used, layers covered), O(S·L²). Nil when no split fits in memory.
public func balancedSplit(_ costs: StageCosts, stageSpeeds: [Double], usable: Int?) -> [Range<Int>]? {
    let layers = costs.layerCount, stages = stageSpeeds.count
    guard stages >= 1 else { return nil }
    if layers == 0 { return Array(repeating: 0..<0, count: stages) }
    func fits(_ r: Range<Int>) -> Bool { usable.map { costs.bytes(r) <= $0 } ?? true }
    func time(_ r: Range<Int>, _ s: Int) -> Double { costs.time(r) / stageSpeeds[s] }

    /// best[s][j]: the objective over stages 0..<s covering layers 0..<j; from[s][j]: where stage s-1 starts.
    func solve(limit: Double?, objective: (Double, Double) -> Double) -> (value: Double, ranges: [Range<Int>])? {
        var best = Array(repeating: Array(repeating: Double.infinity, count: layers + 1), count: stages + 1)
        var from = Array(repeating: Array(repeating: -1, count: layers + 1), count: stages + 1)
        best[0][0] = 0
        for s in 1...stages {
            for j in 1...layers {
                for i in stride(from: j - 1, through: 0, by: -1) where best[s - 1][i].isFinite {
                    let r = i..<j
                    guard fits(r) else { break }  // a longer range from further left only grows
                    let t = time(r, s - 1)
                    if let limit, t > limit { continue }
                    let v = objective(best[s - 1][i], t)
                    if v < best[s][j] { best[s][j] = v; from[s][j] = i }
                }
            }
        }
        guard let used = (1...stages).min(by: { best[$0][layers] < best[$1][layers] }), best[used][layers].isFinite else { return nil }
        var ranges: [Range<Int>] = []
        var j = layers
        for s in stride(from: used, through: 1, by: -1) {
            let i = from[s][j]
            ranges.append(i..<j)
            j = i
        }
        ranges.reverse()
        ranges += Array(repeating: layers..<layers, count: stages - used)
        return (best[used][layers], ranges)
    }
    guard let bottleneck = solve(limit: nil, objective: { max($0, $1) })?.value else { return nil }
    let limit = bottleneck * (1 + 1e-9)
    return solve(limit: limit, objective: { $0 + $1 * $1 })?.ranges
}

/// The fewest ranks (coordinator, vision rank if asked, LM ranks) whose memory holds the model.
private func minimumRanks(_ costs: StageCosts, usable: Int, visionOwnRank: Bool) throws -> Int {
    // Filling each rank as far as it goes is optimal for the count of contiguous groups.
    var groups = 0, start = 0
    while start < costs.layerCount {
        var end = start
        while end < costs.layerCount, costs.bytes(start..<(end + 1)) <= usable { end += 1 }
        guard end > start else {
            throw PlanError.invalid("a single layer with its cross-attention block does not fit in \(gib(usable)) of usable memory per rank")
        }
        groups += 1
        start = end
    }
    return max(groups, 1) + (visionOwnRank ? 2 : 1)
}

public enum PlanDefaults {
    /// Memory kept per rank for caches and the runtime, beyond its weights.
    public static let reservePerRank = 512 << 20
}

/// "22.0 GiB"
public func gib(_ bytes: Int) -> String { String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }

/// Parses sizes like "22GiB", "512MiB", "1.5G", "1000000".
public func parseByteSize(_ text: String) -> Int? {
    let t = text.trimmingCharacters(in: .whitespaces).lowercased()
    let gi = 1_073_741_824.0, mi = 1_048_576.0, ki = 1024.0
    let units: [(String, Double)] = [("gib", gi), ("mib", mi), ("kib", ki), ("gb", 1e9), ("mb", 1e6), ("kb", 1e3),
                                     ("g", gi), ("m", mi), ("k", ki), ("b", 1)]
    for (suffix, scale) in units where t.hasSuffix(suffix) {
        guard let v = Double(t.dropLast(suffix.count)), v > 0 else { return nil }
        return Int(v * scale)
    }
    return Int(t).flatMap { $0 > 0 ? $0 : nil }
}
