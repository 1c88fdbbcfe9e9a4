import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct ProfileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Measure a model's per-part costs on this machine (and, under mpirun, each rank's speed and the link) for `flamingo simulate`.",
        discussion: """
        Each part is loaded alone and timed: a decoder layer and a gated cross-attention block on \
        steps of 1..64 tokens and at a long context, the norm + head, the vision encoder + \
        resampler per image, an image's attach per block. A preset uses synthetic weights. Under \
        mpirun every rank runs a speed probe in turn (relative speeds) and rank 0 ping-pongs real \
        frames with each rank (latency, bandwidth); rank 0 writes the file.
        """
    )

    @Option(help: "Model directory to profile.")
    var model: String?

    @Option(help: "A preset shape with synthetic weights instead: \(ShapePreset.allCases.filter { $0.configuration != nil }.map(\.rawValue).joined(separator: ", ")).")
    var preset: String?

    @Option(help: "Weight format: f32, f16, bf16 or int8 (a model directory: as stored, or int8 quantized at load).")
    var dtype: String?

    @Option(help: "Where to write the calibration JSON.")
    var out: String

    @Option(name: .customLong("step-tokens"), help: "Step sizes to time, comma-separated.")
    var stepTokens: String = "1,2,4,8,16,32,64"

    @Option(help: "Cached tokens per sequence for the attention cost.")
    var context: Int = 256

    @Option(help: "Timed runs per figure (the median is kept).")
    var repeats: Int = 3

    @Option(name: .customLong("shared-host-ranks"), help: "Also measure how up to this many ranks on this one machine slow each other down (for `simulate --shared-host`).")
    var sharedHostRanks: Int = 0

    @Option(name: .customLong("shared-host-only"), help: "Only measure the shared-host figures again and write them into this calibration (with --shared-host-ranks): this machine's memory bandwidth moves, so a sweep takes them right before each run.")
    var sharedHostOnly: String?

    @Option(help: "Compute threads (default: this node's share of the cores).")
    var threads: Int?

    func run() async throws {
        try await failing {
            let steps = stepTokens.split(separator: ",").compactMap { Int($0) }
            guard !steps.isEmpty, steps.allSatisfy({ $0 >= 1 }), steps == steps.sorted(), Set(steps).count == steps.count else {
                throw ValidationError("--step-tokens: ascending positive integers, e.g. 1,2,4,8")
            }
            guard context >= 1, repeats >= 1 else { throw ValidationError("--context and --repeats must be at least 1") }
            let format = try dtype.map { d -> WeightFormat in
                guard let f = WeightFormat(name: d) else { throw ValidationError("unknown dtype '\(d)' (use f32, f16, bf16 or int8)") }
                return f
            }
            let config: any ModelConfiguration, weights: WeightStore, name: String
            switch (model, preset) {
            case (let dir?, nil):
                let directory = try ModelDirectory(URL(fileURLWithPath: dir))
                config = directory.config
                weights = try WeightStore(directory: directory.url, quantizeMatrices: format == .int8)
                name = directory.url.lastPathComponent
            case (nil, let p?):
                guard let shape = ShapePreset(rawValue: p) else {
                    throw ValidationError("unknown preset '\(p)' (known: \(ShapePreset.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                guard let c = shape.configuration else {
                    throw ValidationError("preset \(p) is the paper's shape, written as formulas until its NFNet architecture exists: nothing to run; profile idefics-9b, idefics-80b or bench-1b")
                }
                config = c
                let f = format ?? .bf16
                weights = WeightStore(syntheticSeed: 42, dtype: f == .int8 ? .bf16 : (f == .f32 ? .f32 : (f == .f16 ? .f16 : .bf16)),
                                      quantizeMatrices: f == .int8)
                name = p
            default:
                throw ValidationError("give exactly one of --model or --preset")
            }
            let mpi = MPITransport.launchedByMPI ? try MPITransport() : nil
            let rank = mpi?.rank ?? 0
            let cores = ProcessInfo.processInfo.activeProcessorCount
            ComputeThreads.configure(threads ?? max(1, cores / MPITransport.localRankCount))
            let log = { (s: String) in FileHandle.standardError.write(Data(("profile: " + s + "\n").utf8)) }
            var profiler = Profiler(configuration: config, weights: weights, name: name,
                                    dtype: format.map { $0 == .int8 ? "int8" : $0.rawValue } ?? "stored")
            profiler.stepTokens = steps
            profiler.context = context
            profiler.repeats = repeats
            profiler.log = log

            if let path = sharedHostOnly {
                guard sharedHostRanks > 1 else { throw ValidationError("--shared-host-only needs --shared-host-ranks N (N >= 2)") }
                defer { mpi?.finalize() }
                var calibration = try Calibration.read(URL(fileURLWithPath: path))
                let shared = try profiler.sharedHostSlowdown(ranks: sharedHostRanks, rounds: 1)
                calibration.sharedHostSlowdown = shared.slowdown
                calibration.singleRankStreamGBps = shared.singleGBps
                calibration.machineReadGBps = shared.machineGBps
                try calibration.write(to: URL(fileURLWithPath: out))
                log(String(format: "%d ranks at once run %.2fx slower than one alone; wrote %@", min(sharedHostRanks, ProcessInfo.processInfo.activeProcessorCount), shared.slowdown[min(sharedHostRanks, ProcessInfo.processInfo.activeProcessorCount) - 1], out))
                return
            }
            var speeds: [Double]? = nil, link: LinkCost? = nil
            if let mpi {
                defer { mpi.finalize() }
                if rank != 0 {
                    // Probe when rank 0 asks (one rank at a time, so probes do not share cores), then answer link probes.
                    while true {
                        guard let m = try mpi.receive(timeout: .seconds(600)) else { throw CalibrationError("rank 0 sent nothing for 600 s") }
                        if m.kind == .statsRequest {
                            var reply = Message(kind: .stats)
                            reply.stats = RankStats(rank: UInt32(rank), role: "profile", layerStart: 0, layerEnd: 0, weightBytes: 0,
                                                    peakRSSBytes: 0, computeSeconds: try profiler.speedProbe(), waitSeconds: 0,
                                                    bytesSent: 0, bytesReceived: 0, cacheBytes: 0)
                            try mpi.send(reply, to: 0)
                            break
                        }
                    }
                    try LinkProfile.answer(transport: mpi)
                    _ = try LinkProfile.measureAllreduce(transport: mpi)
                    return
                }
                log("speed probe on each of \(mpi.worldSize) ranks...")
                var probe = [try profiler.speedProbe()]
                for r in 1..<mpi.worldSize {
                    try mpi.send(Message(kind: .statsRequest), to: r)
                    while true {
                        guard let m = try mpi.receive(timeout: .seconds(600)) else { throw CalibrationError("rank \(r) did not answer its speed probe") }
                        if m.kind == .stats, let s = m.stats, Int(s.rank) == r { probe.append(s.computeSeconds); break }
                    }
                }
                speeds = probe.map { probe[0] / $0 }
                link = try LinkProfile.measure(transport: mpi, log: log)
                link?.allreduce = try LinkProfile.measureAllreduce(transport: mpi, log: log)
            }
            var calibration = try profiler.measure()
            if sharedHostRanks > 1 {
                log("\(sharedHostRanks) ranks sharing this machine: one rank's weight stream against the machine's read rate...")
                let shared = try profiler.sharedHostSlowdown(ranks: sharedHostRanks)
                calibration.sharedHostSlowdown = shared.slowdown
                calibration.singleRankStreamGBps = shared.singleGBps
                calibration.machineReadGBps = shared.machineGBps
            }
            calibration.rankSpeeds = speeds
            calibration.link = link
            try calibration.write(to: URL(fileURLWithPath: out))
            log("wrote \(out)")
        }
    }
}
