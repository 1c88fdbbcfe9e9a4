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

    public var role: String {
        var parts: [String] = []
        if coordinator { parts.append("coordinator") }
        if vision { parts.append("vision+resampler") }
        if embedding { parts.append("embeddings") }
        if !layers.isEmpty { parts.append("LM layers") }
        if outputHead { parts.append("norm+head") }
        return parts.isEmpty ? "idle" : parts.joined(separator: ", ")
    }
}

public struct PipelinePlan: Sendable, Codable, Equatable {
    public var model: String
    public var stages: [StageAssignment]

    /// Ranks owning LM layers, in pipeline order.
    public var languageStages: [StageAssignment] { stages.filter { !$0.layers.isEmpty } }
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
    public init() {}

    func millisecondsPerToken(bytes: Int, macs: Int) -> Double {
        max(Double(bytes) / (memoryGBps * 1e9), 2 * Double(macs) / (gflops * 1e9)) * 1000
    }
}

/// Splits a model over `ranks`: rank 0 coordinates and (by default) runs vision + resampler;
/// the other ranks each take a contiguous group of LM layers with their cross-attention blocks,
/// embeddings on the first, norm + head on the last. Groups balance estimated time per token
/// within `memoryPerRank` (weights + a reserve for caches and runtime). With one rank, rank 0
/// holds everything. `visionOwnRank` moves vision to rank 1 and the LM to ranks 2...
public func plan(shape: ModelShape, ranks: Int, memoryPerRank: Int? = nil, visionOwnRank: Bool = false,
                 reservePerRank: Int = 512 << 20, cost: CostModel = CostModel()) throws -> PipelinePlan {
    guard ranks >= 1 else { throw PlanError.invalid("need at least one rank") }
    let layerBytes = shape.layerBytes
    let layerTime = (0..<shape.layerCount).map {
        cost.millisecondsPerToken(bytes: shape.layerBytesPerToken[$0], macs: shape.layerMACsPerToken[$0])
    }
    let visionBytes = shape.visionBytes
    let embeddingBytes = shape.embeddingBytes
    let headBytes = shape.headBytes
    let headTime = cost.millisecondsPerToken(bytes: headBytes, macs: shape.headMACsPerToken)
    let usable = memoryPerRank.map { $0 - reservePerRank }

    if ranks == 1 {
        let total = visionBytes + embeddingBytes + headBytes + layerBytes.reduce(0, +) - (shape.headSharesEmbedding ? embeddingBytes : 0)
        if let usable, total > usable {
            throw PlanError.tooFewRanks(needed: try minimumRanks(), given: ranks,
                                        reason: "\(gib(total)) of weights on one rank of \(gib(memoryPerRank!))")
        }
        return PipelinePlan(model: shape.name, stages: [
            StageAssignment(rank: 0, coordinator: true, vision: true, embedding: true, layers: 0..<shape.layerCount,
                            outputHead: true, crossBlocks: shape.crossBlockCount, weightBytes: total,
                            cacheBudgetBytes: usable.map { $0 - total },
                            estimatedMillisecondsPerToken: layerTime.reduce(0, +) + headTime)
        ])
    }
    if visionOwnRank && ranks < 3 {
        throw PlanError.invalid("a vision rank of its own needs at least 3 ranks (coordinator, vision, LM)")
    }
    let firstLM = visionOwnRank ? 2 : 1
    let groups = ranks - firstLM

    /// Contiguous groups with each group's time <= limit and memory within budget; nil if impossible.
    func split(limit: Double, groupCount: Int) -> [Range<Int>]? {
        var result: [Range<Int>] = []
        var start = 0
        while start < shape.layerCount {
            guard result.count < groupCount else { return nil }
            var end = start
            var time = 0.0, bytes = result.isEmpty ? embeddingBytes : 0
            while end < shape.layerCount {
                let extraHead = (end + 1 == shape.layerCount) ? headBytes : 0
                let t = time + layerTime[end] + (end + 1 == shape.layerCount ? headTime : 0)
                let b = bytes + layerBytes[end] + extraHead
                if end > start && t > limit { break }
                if let usable, b > usable { break }
                time = t - (end + 1 == shape.layerCount ? headTime : 0)
                bytes = b - extraHead
                end += 1
            }
            if end == start { return nil }  // one layer alone does not fit
            result.append(start..<end)
            start = end
        }
        return result
    }

    func minimumRanks() throws -> Int {
        for g in 1...max(1, shape.layerCount) where split(limit: .infinity, groupCount: g) != nil {
            return g + (visionOwnRank ? 2 : 1)
        }
        throw PlanError.invalid("a single layer with its cross-attention block does not fit in \(gib(memoryPerRank ?? 0)) per rank")
    }

    if let usable, visionBytes > usable {
        throw PlanError.invalid("the vision encoder and resampler (\(gib(visionBytes))) alone exceed \(gib(memoryPerRank!)) per rank")
    }
    guard groups >= 1, split(limit: .infinity, groupCount: groups) != nil else {
        let needed = try minimumRanks()
        let total = layerBytes.reduce(0, +) + embeddingBytes + headBytes
        throw PlanError.tooFewRanks(needed: needed, given: ranks,
                                    reason: "\(gib(total)) of LM weights over \(max(groups, 0)) LM rank(s) of \(gib(memoryPerRank ?? 0))")
    }
    // Binary search the smallest per-stage time limit that still splits into `groups` groups.
    var low = layerTime.max() ?? 0, high = layerTime.reduce(0, +) + headTime
    for _ in 0..<60 {
        let mid = (low + high) / 2
        if split(limit: mid, groupCount: groups) != nil { high = mid } else { low = mid }
    }
    var ranges = split(limit: high, groupCount: groups)!
    // The greedy split may need fewer groups than ranks; use every rank by halving the slowest
    // multi-layer group (never raises the bottleneck, lowers memory per rank).
    func time(_ r: Range<Int>) -> Double { r.reduce(0.0) { $0 + layerTime[$1] } }
    while ranges.count < groups, let i = ranges.indices.filter({ ranges[$0].count > 1 }).max(by: { time(ranges[$0]) < time(ranges[$1]) }) {
        let r = ranges[i]
        let mid = r.lowerBound + r.count / 2
        ranges.replaceSubrange(i...i, with: [r.lowerBound..<mid, mid..<r.upperBound])
    }
    // More ranks than layers: the last ranks hold nothing and only take part in start-up and shutdown.
    while ranges.count < groups { ranges.append(shape.layerCount..<shape.layerCount) }

    var stages: [StageAssignment] = []
    let coordinatorHasVision = !visionOwnRank
    stages.append(StageAssignment(rank: 0, coordinator: true, vision: coordinatorHasVision, embedding: false, layers: 0..<0,
                                  outputHead: false, crossBlocks: 0, weightBytes: coordinatorHasVision ? visionBytes : 0,
                                  cacheBudgetBytes: usable.map { $0 - (coordinatorHasVision ? visionBytes : 0) },
                                  estimatedMillisecondsPerToken: 0))
    if visionOwnRank {
        stages.append(StageAssignment(rank: 1, coordinator: false, vision: true, embedding: false, layers: 0..<0,
                                      outputHead: false, crossBlocks: 0, weightBytes: visionBytes,
                                      cacheBudgetBytes: usable.map { $0 - visionBytes }, estimatedMillisecondsPerToken: 0))
    }
    let lastNonEmpty = ranges.lastIndex { !$0.isEmpty } ?? 0
    for (g, range) in ranges.enumerated() {
        let isFirst = g == 0, isLast = g == lastNonEmpty
        let bytes = range.reduce(0) { $0 + layerBytes[$1] } + (isFirst ? embeddingBytes : 0) + (isLast ? headBytes : 0)
            - (isFirst && isLast && shape.headSharesEmbedding ? embeddingBytes : 0)
        let time = range.reduce(0.0) { $0 + layerTime[$1] } + (isLast ? headTime : 0)
        stages.append(StageAssignment(rank: firstLM + g, coordinator: false, vision: false, embedding: isFirst, layers: range,
                                      outputHead: isLast, crossBlocks: range.filter(shape.hasCrossBlock).count,
                                      weightBytes: bytes, cacheBudgetBytes: usable.map { $0 - bytes },
                                      estimatedMillisecondsPerToken: time))
    }
    return PipelinePlan(model: shape.name, stages: stages)
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
