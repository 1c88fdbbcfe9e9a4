import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Predict a layout's throughput and latency from a calibration: a discrete-event simulation of the runtime's own schedule.",
        discussion: """
        The runtime's scheduler (microbatch groups, admission, prefill and decode steps) runs as it \
        does on rank 0; every rank handles its messages in order with the calibration's measured \
        costs; messages take latency + bytes / bandwidth. Clients send their requests one after \
        another (closed loop), all starting at once.
        """
    )

    @Option(help: "A calibration written by `flamingo profile`.")
    var calibration: String

    @Option(help: "Model directory (planned as stored).")
    var model: String?

    @Option(help: "A preset shape: \(ShapePreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: String?

    @Option(help: "With --preset: that preset's shape with this many LM layers (as `flamingo synth --layers` makes it).")
    var layers: Int?

    @Option(help: "MPI ranks.")
    var ranks: Int

    @Option(help: "Ranks per LM stage (tensor parallelism).")
    var tp: Int = 1

    @Option(help: "Microbatch groups in flight (default: the runtime's, max(4, LM stages)).")
    var microbatches: Int?

    @Option(name: .customLong("batch-size"), help: "Sequences per microbatch group.")
    var batchSize: Int = 8

    @Option(help: "Concurrent clients.")
    var clients: Int = 1

    @Option(name: .customLong("requests-per-client"), help: "Requests each client sends, one after another.")
    var requestsPerClient: Int = 1

    @Option(name: .customLong("prompt-tokens"), help: "Prompt tokens per request.")
    var promptTokens: Int = 32

    @Option(name: .customLong("max-tokens"), help: "Tokens generated per request.")
    var maxTokens: Int = 32

    @Option(help: "Images per request.")
    var images: Int = 1

    @Option(help: "The link between ranks, LATENCY,BANDWIDTH (e.g. 0.2ms,1Gbit or 50us,10Gbit; default: the calibration's).")
    var link: String?

    @Option(name: .customLong("rank-speed"), help: "Relative speed of each rank, comma-separated (default: the calibration's, if it has one per rank).")
    var rankSpeed: String?

    @Flag(name: .customLong("plan-as-equal"), help: "Plan as if every rank had the same speed (what a run without --rank-speed does), but simulate the ranks at their speeds.")
    var planAsEqual = false

    @Option(name: .customLong("mem-per-rank"), help: "Memory each rank may use, for planning.")
    var memPerRank: String?

    @Flag(name: .customLong("vision-own-rank"), help: "Give vision + resampler a rank of their own.")
    var visionOwnRank = false

    @Flag(name: .customLong("wire-bf16"), help: "Activations as bf16 on the wire.")
    var wireBF16 = false

    @Flag(name: .customLong("shared-host"), help: "Every rank on this one machine, sharing its cores and memory bandwidth (the calibration's measured slowdown), as in the netns sweeps.")
    var sharedHost = false

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Print one CSV header line and one row (the whole-run figures).")
    var csv = false

    func run() async throws {
        try await failing {
            let cal = try Calibration.read(URL(fileURLWithPath: calibration))
            let format: WeightFormat = cal.dtype == "int8" ? .int8 : (WeightFormat(name: cal.dtype) ?? .bf16)
            let shape: ModelShape
            switch (model, preset) {
            case (let dir?, nil):
                let directory = try ModelDirectory(URL(fileURLWithPath: dir))
                shape = try ModelShape.forLoading(directory: directory, weights: try WeightStore(directory: directory.url),
                                                  quantizeMatrices: format == .int8)
            case (nil, let p?):
                guard let s = ShapePreset(rawValue: p) else { throw ValidationError("unknown preset '\(p)'") }
                if let layers {
                    guard let config = s.configuration else { throw ValidationError("--layers: preset \(p) is formulas, not a configuration") }
                    let dtype: DType = format == .f32 ? .f32 : (format == .f16 ? .f16 : .bf16)
                    shape = try ModelShape(configuration: try config.withLayerCount(layers), dtype: dtype,
                                           int8Matrices: format == .int8, name: "\(p)-\(layers)")
                } else {
                    shape = s.shape(format: format)
                }
            default:
                throw ValidationError("give exactly one of --model or --preset")
            }
            guard let linkCost = try link.map({ text -> LinkCost in
                guard let l = LinkCost(parsing: text) else { throw ValidationError("--link: cannot read '\(text)' (e.g. 0.2ms,1Gbit)") }
                return l
            }) ?? cal.link else {
                throw ValidationError("give --link LATENCY,BANDWIDTH: \(calibration) has no link figures (profile under mpirun to measure them)")
            }
            var speeds = try rankSpeed.map(parseRankSpeeds)
            if speeds == nil, let measured = cal.rankSpeeds, measured.count == ranks { speeds = measured }
            let budget = try memPerRank.map { text -> Int in
                guard let b = parseByteSize(text) else { throw ValidationError("--mem-per-rank: cannot read '\(text)'") }
                return b
            }
            let layout = try plan(shape: shape, ranks: ranks, memoryPerRank: budget, visionOwnRank: visionOwnRank,
                                  rankSpeeds: planAsEqual ? nil : speeds, tensorParallel: tp)
            var setup = SimulationSetup(plan: layout, link: linkCost)
            setup.microbatches = microbatches
            setup.batchSize = batchSize
            setup.clients = clients
            setup.requestsPerClient = requestsPerClient
            setup.promptTokens = promptTokens
            setup.maxTokens = maxTokens
            setup.imagesPerRequest = images
            setup.rankSpeeds = speeds
            setup.wireBytesPerValue = wireBF16 ? 2 : 4
            if sharedHost {
                guard let slowdown = cal.sharedHostSlowdown else {
                    throw ValidationError("--shared-host: \(calibration) has no shared-host figures (profile with --shared-host-ranks N)")
                }
                setup.sharedHostSlowdown = slowdown
            }
            let result = try simulate(setup, calibration: cal, shape: shape)
            if csv {
                print("model,ranks,tp,microbatches,batch_size,clients,requests_per_client,prompt_tokens,max_tokens,tokens_per_second,time_to_first_token_seconds,per_token_latency_seconds,bubble_fraction,bytes_on_wire_per_token,max_rank_memory_bytes")
                let memory = result.perRank.map(\.memoryBytes).max() ?? 0
                print([shape.name, "\(ranks)", "\(tp)", microbatches.map(String.init) ?? "", "\(batchSize)", "\(clients)", "\(requestsPerClient)",
                       "\(promptTokens)", "\(maxTokens)", "\(result.tokensPerSecond)", "\(result.timeToFirstTokenSeconds)",
                       "\(result.perTokenLatencySeconds)", "\(result.bubbleFraction)", "\(result.bytesOnWirePerToken)", "\(memory)"]
                    .joined(separator: ","))
                return
            }
            if json {
                print(String(decoding: try jsonData(result, pretty: false, snakeCase: true), as: UTF8.self))
                return
            }
            print(String(format: "%@ on %d ranks (tp %d), %d client(s) x %d request(s), %d prompt + %d generated tokens",
                         shape.name, ranks, tp, clients, requestsPerClient, promptTokens, maxTokens))
            print(String(format: "throughput %.2f tokens/s, time to first token %.3f s, per-token latency %.4f s, bubble %.1f%%, %.0f bytes on the wire per token",
                         result.tokensPerSecond, result.timeToFirstTokenSeconds, result.perTokenLatencySeconds,
                         100 * result.bubbleFraction, result.bytesOnWirePerToken))
            print("rank  role                                     layers    busy s    util   memory")
            for r in result.perRank {
                print(String(format: "%4d  %@ %@ %8.3f  %5.1f%%  %@", r.rank, r.role.padding(toLength: 40, withPad: " ", startingAt: 0),
                             r.layers.padding(toLength: 8, withPad: " ", startingAt: 0), r.busySeconds, 100 * r.utilisation, gib(r.memoryBytes)))
            }
        }
    }
}
