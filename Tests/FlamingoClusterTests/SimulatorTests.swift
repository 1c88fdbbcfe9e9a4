import Foundation
import Testing
import FlamingoCluster
import FlamingoCore
import FlamingoModel

// The simulator on schedules small enough to work out by hand: constant step costs, so each
// expected figure is a short sum written next to the check.

private let shape = ShapePreset.bench1b.shape(dtype: .bf16)

/// Every decoder layer takes `layer` seconds a step, a block `block`, the head `head`, whatever
/// the step's size; vision `vision` per image; attaching an image `attach` per block.
private func calibration(layer: Double, block: Double = 0, head: Double = 0, vision: Double = 0, attach: Double = 0) -> Calibration {
    func constant(_ s: Double) -> StepCost { StepCost(tokens: [1, 1_000_000], seconds: [s, s]) }
    return Calibration(
        model: shape.name, dtype: "bf16", machine: .init(cpu: "test", features: [], threads: 1, kernels: "test"),
        hiddenSize: shape.hiddenSize, vocabularySize: 1000, visualTokensPerImage: 64, visualTokenWidth: 64,
        pixelBytesPerImage: 1000, decoderLayer: constant(layer), crossAttentionBlock: constant(block), outputHead: constant(head),
        visionSecondsPerImage: vision, imageAttachSecondsPerBlock: attach, cacheBytesPerTokenPerLayer: 100,
        cacheBytesPerImagePerBlock: 1000)
}

/// A link with `latency` and so much bandwidth that bytes cost nothing.
private func link(latency: Double) -> LinkCost { LinkCost(latencySeconds: latency, bytesPerSecond: 1e30) }

private func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-9 * max(1, abs(b)) }

@Test func oneRankOneRequestIsStepsInSeries() throws {
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 1)
    var setup = SimulationSetup(plan: plan, link: link(latency: 0.5))  // a rank's messages to itself take no time
    setup.promptTokens = 8
    setup.maxTokens = 5
    setup.imagesPerRequest = 0
    let r = try simulate(setup, calibration: calibration(layer: 0.01, block: 0.002, head: 0.03), shape: shape)
    let step = 16 * 0.01 + Double(shape.crossBlockCount) * 0.002 + 0.03  // every layer and block, then the head
    #expect(r.generatedTokens == 5)
    #expect(close(r.seconds, 5 * step))  // prefill gives the first token, four decode steps the rest
    #expect(close(r.timeToFirstTokenSeconds, step))
    #expect(close(r.perTokenLatencySeconds, step))
    #expect(close(r.bubbleFraction, 0))
    #expect(r.bytesOnWirePerToken == 0)
}

@Test func twoStagesAddTheLinkThreeTimesPerStep() throws {
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 3)
    let (first, second) = (plan.languageStages[0], plan.languageStages[1])
    var setup = SimulationSetup(plan: plan, link: link(latency: 0.001))
    setup.maxTokens = 4
    setup.imagesPerRequest = 0
    let r = try simulate(setup, calibration: calibration(layer: 0.01, head: 0.02), shape: shape)
    // rank 0 -> stage 1 -> stage 2 (+ head) -> rank 0: three hops of 1 ms.
    let step = 3 * 0.001 + Double(first.layers.count) * 0.01 + Double(second.layers.count) * 0.01 + 0.02
    #expect(close(r.seconds, 4 * step))
    #expect(close(r.perTokenLatencySeconds, step))
    // Each stage is busy for its own share of every step.
    #expect(close(r.perRank[1].busySeconds, 4 * Double(first.layers.count) * 0.01))
    #expect(close(r.perRank[2].busySeconds, 4 * (Double(second.layers.count) * 0.01 + 0.02)))
}

@Test func twoMicrobatchesFillTwoStages() throws {
    // 16 layers over two stages of 8: each stage takes t = 8 * 10 ms a step. Two requests in two
    // groups: B runs one step behind A, so both stages are busy except for one step at either end.
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 3)
    #expect(plan.languageStages.map(\.layers.count) == [8, 8])
    var setup = SimulationSetup(plan: plan, link: link(latency: 0))
    setup.clients = 2
    setup.batchSize = 1
    setup.maxTokens = 6
    setup.imagesPerRequest = 0
    let r = try simulate(setup, calibration: calibration(layer: 0.01), shape: shape)
    let t = 8 * 0.01, steps = 6.0
    #expect(close(r.seconds, 2 * t * steps + t))  // A ends at 2t per step; B one t later
    #expect(close(r.perTokenLatencySeconds, 2 * t))
    #expect(close(r.tokensPerSecond, 12 / (2 * t * steps + t)))
    #expect(close(r.bubbleFraction, 1 / (2 * steps + 1)))  // busy 2 * steps * t of (2 * steps + 1) * t per stage
}

@Test func oneMicrobatchGroupBatchesBothRequests() throws {
    // One group of batch size 2: both requests share every step, so they finish together.
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 3)
    var setup = SimulationSetup(plan: plan, link: link(latency: 0))
    setup.clients = 2
    setup.microbatches = 1
    setup.maxTokens = 3
    setup.imagesPerRequest = 0
    let r = try simulate(setup, calibration: calibration(layer: 0.01), shape: shape)
    let t = 8 * 0.01
    #expect(close(r.seconds, 3 * 2 * t))
    #expect(close(r.bubbleFraction, 0.5))  // each stage waits while the other computes
}

@Test func anImageGoesThroughVisionBeforeThePrefill() throws {
    // One rank: the pixels message is handled first (vision), the prefill that came next waits for
    // the visual tokens, which the rank sends to itself and attaches to each block, then runs.
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 1)
    var setup = SimulationSetup(plan: plan, link: link(latency: 0))
    setup.maxTokens = 2
    setup.imagesPerRequest = 1
    let blocks = Double(shape.crossBlockCount)
    let r = try simulate(setup, calibration: calibration(layer: 0.01, block: 0.001, vision: 0.3, attach: 0.002), shape: shape)
    let step = 16 * 0.01 + blocks * 0.001
    #expect(close(r.timeToFirstTokenSeconds, 0.3 + blocks * 0.002 + step))
    #expect(close(r.seconds, 0.3 + blocks * 0.002 + 2 * step))
}

@Test func aTensorParallelStageTakesAShareAndTheAllreduces() throws {
    // One stage of two ranks: half of every layer's time, plus the leader's send of the input to
    // the other rank and two allreduces (one exchange of partials) per layer and per block; the
    // leader runs the head alone.
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 3, tensorParallel: 2)
    #expect(plan.languageStages.count == 1 && plan.tensorGroup(of: plan.languageStages[0]) == [1, 2])
    let latency = 0.0001
    var setup = SimulationSetup(plan: plan, link: link(latency: latency))
    setup.maxTokens = 3
    setup.imagesPerRequest = 0
    let r = try simulate(setup, calibration: calibration(layer: 0.01, block: 0.002, head: 0.02), shape: shape)
    let blocks = Double(shape.crossBlockCount)
    let compute = (16 * 0.01 + blocks * 0.002) / 2 + 0.02
    let allreduce = latency
    let step = 2 * latency + compute + (2 * 16 + 2 * blocks) * allreduce + latency  // two hops, the share, 2 per layer and block, the fan-out
    #expect(close(r.seconds, 3 * step))
    #expect(r.perRank[1].busySeconds == r.perRank[2].busySeconds)
}

@Test func slowerRankTakesLongerAndCallersAreToldAboutBadSetups() throws {
    let plan = try FlamingoCluster.plan(shape: shape, ranks: 3)
    var setup = SimulationSetup(plan: plan, link: link(latency: 0))
    setup.imagesPerRequest = 0
    setup.maxTokens = 2
    setup.rankSpeeds = [1, 0.5, 1]
    let r = try simulate(setup, calibration: calibration(layer: 0.01), shape: shape)
    #expect(close(r.seconds, 2 * (8 * 0.01 / 0.5 + 8 * 0.01)))
    setup.rankSpeeds = [1, 1]
    #expect(throws: SimulationError.self) { try simulate(setup, calibration: calibration(layer: 0.01), shape: shape) }
    var other = calibration(layer: 0.01)
    other.hiddenSize += 1
    setup.rankSpeeds = nil
    #expect(throws: SimulationError.self) { try simulate(setup, calibration: other, shape: shape) }
}

@Test func stepCostsInterpolateBetweenMeasuredSizes() {
    let cost = StepCost(tokens: [1, 8, 64], seconds: [1, 2, 9], secondsPerAttendedPair: 0.5)
    #expect(cost.seconds(tokens: 1) == 1)
    #expect(cost.seconds(tokens: 4) == 1 + 3.0 / 7)
    #expect(cost.seconds(tokens: 36) == 5.5)
    #expect(cost.seconds(tokens: 120) == 16)  // the last segment's slope, 1/8 s per token
    #expect(cost.seconds(tokens: 8, attendedPairs: 10) == 7)
    #expect(LinkCost(parsing: "0.2ms,1Gbit") == LinkCost(latencySeconds: 0.0002, bytesPerSecond: 125_000_000))
    #expect(LinkCost(parsing: "50us,10Gbit")?.bytesPerSecond == 1.25e9)
    #expect(LinkCost(parsing: "fast") == nil)
}
