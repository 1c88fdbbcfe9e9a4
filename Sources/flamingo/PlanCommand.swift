import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Split a model over MPI ranks: roles, layer ranges, memory and time per stage."
    )

    @Option(help: "Model directory to plan for.")
    var model: String?

    @Option(help: "A model shape instead of a directory: \(ShapePreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: String?

    @Option(help: "Number of MPI ranks.")
    var ranks: Int

    @Option(name: .customLong("mem-per-rank"), help: "Memory each rank may use, e.g. 22GiB.")
    var memPerRank: String?

    @Option(help: "Weight format for presets: f32, f16, bf16 or int8 (a model directory is planned as stored; with int8, as loaded with --quantize int8).")
    var dtype: String?

    @Flag(name: .customLong("vision-own-rank"), help: "Give vision + resampler a rank of their own (rank 1).")
    var visionOwnRank = false

    @Option(help: "Ranks per LM stage (tensor parallelism).")
    var tp: Int = 1

    @Option(name: .customLong("rank-speed"), help: "Relative speed of each rank, comma-separated in rank order (e.g. 1,1,0.5,1).")
    var rankSpeed: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await failing {
            guard let format = WeightFormat(name: dtype ?? "bf16") else { throw ValidationError("unknown dtype '\(dtype ?? "")' (use f32, f16, bf16 or int8)") }
            let shape: ModelShape
            switch (model, preset) {
            case (nil, let name?):
                guard let p = ShapePreset(rawValue: name) else {
                    throw ValidationError("unknown preset '\(name)' (known: \(ShapePreset.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                shape = p.shape(format: format)
            case (let dir?, nil):
                // A directory is planned as it is stored; --dtype int8 plans it quantized at load (--quantize int8).
                let directory = try ModelDirectory(URL(fileURLWithPath: dir))
                let stored = try WeightStore(directory: directory.url)
                shape = try ModelShape.forLoading(directory: directory, weights: stored, quantizeMatrices: dtype != nil && format == .int8)
            default:
                throw ValidationError("give exactly one of --model or --preset")
            }
            let budget = try memPerRank.map { text -> Int in
                guard let b = parseByteSize(text) else { throw ValidationError("--mem-per-rank: cannot read '\(text)'") }
                return b
            }
            let result = try plan(shape: shape, ranks: ranks, memoryPerRank: budget, visionOwnRank: visionOwnRank,
                                  rankSpeeds: try rankSpeed.map(parseRankSpeeds), tensorParallel: tp)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(result), as: UTF8.self))
                return
            }
            let parameters = shape.totalParameters >= 1_000_000_000
                ? String(format: "%.2fB", Double(shape.totalParameters) / 1e9) : String(format: "%.2fM", Double(shape.totalParameters) / 1e6)
            print("plan for \(shape.name): \(parameters) parameters, \(shape.layerCount) layers, \(shape.crossBlockCount) cross-attention blocks, \(ranks) rank(s)\(budget.map { ", \(gib($0)) per rank" } ?? "")")
            print("rank  role                                           layers    xattn  weights      cache budget  est ms/token")
            for s in result.stages {
                let layers = s.layers.isEmpty ? "-" : "\(s.layers.lowerBound)-\(s.layers.upperBound - 1)"
                print(String(format: "%4d  %@ %@ %5d  %@  %@  %10.1f",
                             s.rank, s.role.padding(toLength: 46, withPad: " ", startingAt: 0),
                             layers.padding(toLength: 8, withPad: " ", startingAt: 0), s.crossBlocks,
                             gib(s.weightBytes).padding(toLength: 11, withPad: " ", startingAt: 0),
                             (s.cacheBudgetBytes.map(gib) ?? "-").padding(toLength: 12, withPad: " ", startingAt: 0),
                             s.estimatedMillisecondsPerToken))
            }
            let slowest = result.stages.map(\.estimatedMillisecondsPerToken).max() ?? 0
            print(String(format: "pipeline bottleneck %.1f ms/token per microbatch (estimate at %.0f GB/s, %.0f GFLOP/s per rank)",
                         slowest, CostModel().memoryGBps, CostModel().gflops))
        }
    }
}
