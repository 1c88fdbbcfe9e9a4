import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

/// Options of commands that run the pipeline.
struct PipelineCommandOptions: ParsableArguments {
    @Flag(name: .customLong("vision-own-rank"), help: "Give vision + resampler a rank of their own (rank 1).")
    var visionOwnRank = false

    @Option(help: "Microbatch groups kept in flight (default: max(4, LM stages)).")
    var microbatches: Int?

    @Option(name: .customLong("batch-size"), help: "Sequences per microbatch group.")
    var batchSize: Int = 8

    @Flag(help: "Print per-rank statistics on stderr: role, layers, weights, peak RSS, compute vs wait, bytes moved.")
    var stats = false

    @Option(name: .customLong("stats-json"), help: "Also write the per-rank statistics to this JSON file.")
    var statsJSON: String?

    @Option(name: .customLong("mem-per-rank"), help: "Memory each rank may use (e.g. 22GiB); a layout that does not fit is refused.")
    var memPerRank: String?

    @Option(help: "Ranks per LM stage (tensor parallelism): each stage's layers are split over this many ranks (rank 0 + stages x tp ranks in all).")
    var tp: Int = 1

    @Option(name: .customLong("rank-speed"), help: "Relative speed of each rank, comma-separated in rank order (e.g. 1,1,0.5,1): stages are balanced by time, a slower rank gets less work.")
    var rankSpeed: String?

    @Option(name: .customLong("peer-timeout"),
            help: "Seconds a rank may stay silent (heartbeats every 0.5 s) before the others count it as failed and end the job.")
    var peerTimeout: Double = 15

    @Flag(name: .customLong("wire-bf16"), help: "Send activations between ranks as bf16 (half the bytes; results no longer bit-identical to one process).")
    var wireBF16 = false

    func validate() throws {
        if let m = memPerRank, parseByteSize(m) == nil { throw ValidationError("--mem-per-rank: cannot read '\(m)'") }
        if let s = rankSpeed { _ = try parseRankSpeeds(s) }
        if tp < 1 { throw ValidationError("--tp must be at least 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let n = microbatches, n < 1 { throw ValidationError("--microbatches must be at least 1") }
        guard peerTimeout >= 1, peerTimeout <= 86_400 else { throw ValidationError("--peer-timeout must be 1...86400 seconds") }
    }

    func pipeline(_ modelOptions: ModelOptions) throws -> PipelineOptions {
        var o = PipelineOptions()
        o.quantizeMatrices = try modelOptions.quantizeMatrices()
        o.visionOwnRank = visionOwnRank
        o.microbatches = microbatches
        o.batchSize = batchSize
        o.memoryPerRank = memPerRank.flatMap(parseByteSize)
        o.rankSpeeds = try rankSpeed.map(parseRankSpeeds)
        o.tensorParallel = tp
        return o
    }
}

/// "1,1,0.5" -> [1, 1, 0.5]: positive numbers, one per rank.
func parseRankSpeeds(_ text: String) throws -> [Double] {
    let values = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 && $0!.isFinite }) else {
        throw ValidationError("--rank-speed: '\(text)' is not a comma-separated list of positive numbers, one per rank")
    }
    return values.map { $0! }
}

/// This rank's transport: MPI under mpirun, else one in-process rank. Also sets compute threads
/// to this node's share of the cores.
func makeTransport(_ pipelineOptions: PipelineCommandOptions, _ modelOptions: ModelOptions) throws -> (StageTransport, MPITransport?) {
    let transport: StageTransport
    var mpi: MPITransport? = nil
    do {
        if MPITransport.launchedByMPI {
            let t = try MPITransport(peerTimeout: .milliseconds(Int64(pipelineOptions.peerTimeout * 1000)),
                                     floatEncoding: pipelineOptions.wireBF16 ? .bf16 : .f32)
            mpi = t
            transport = t
        } else {
            transport = InProcessTransport()
        }
    } catch {
        printError(error, rank: nil)
        throw ExitCode(1)
    }
    let cores = ProcessInfo.processInfo.activeProcessorCount
    ComputeThreads.configure(modelOptions.threads ?? max(1, cores / MPITransport.localRankCount))
    return (transport, mpi)
}

/// Runs a pipeline job on this rank: under mpirun over MPI, else as one process. Rank 0 makes the
/// requests and reports; every rank serves its stage. Errors print one line and exit non-zero;
/// a failing rank ends the whole job (mpirun stops the others).
func runOnRanks(pipelineOptions: PipelineCommandOptions, modelOptions: ModelOptions,
                makeRequests: (ModelDirectory) throws -> [GenerationRequest],
                report: (ModelDirectory, [GenerationRequest], RunReport) throws -> Void) async throws {
    let (transport, mpi) = try makeTransport(pipelineOptions, modelOptions)
    let rankLabel = transport.worldSize > 1 ? transport.rank : nil
    do {
        let directory = try ModelDirectory(modelOptions.modelURL)
        var requests: [GenerationRequest] = []
        let progress = Progress(enabled: transport.rank == 0 && isatty(2) != 0)
        let result = try PipelineRuntime.run(
            transport: transport, directory: directory, options: try pipelineOptions.pipeline(modelOptions),
            collectStats: pipelineOptions.stats || pipelineOptions.statsJSON != nil,
            progress: { progress.update("loading \(directory.url.lastPathComponent): \($0)") }
        ) {
            progress.finish()
            requests = try makeRequests(directory)
            return requests
        }
        progress.finish()
        if let result {
            try report(directory, requests, result)
            if pipelineOptions.stats { printStats(result) }
            if let path = pipelineOptions.statsJSON { try writeStatsJSON(result, to: path) }
        }
        mpi?.finalize()
    } catch PipelineError.stageFailed(rank: 0, _) where transport.rank != 0 {
        // Rank 0 already said what went wrong.
        exit(1)
    } catch {
        printError(error, rank: rankLabel)
        // Under mpirun, a rank that exits without finalising ends the job: no rank is left waiting.
        exit(1)
    }
}

/// Serving on this rank: every rank loads its stage; rank 0 gets the engine and runs `start`
/// (the HTTP server) until it returns after `engine.shutdown`. Then every rank stops cleanly.
func runServing(pipelineOptions: PipelineCommandOptions, modelOptions: ModelOptions, maxQueued: Int,
                start: @escaping @Sendable (PipelineEngine) async throws -> Void) async throws {
    // mpirun forwards SIGUSR1 to every rank: rank 0's server takes it as a graceful stop (and stops
    // the others over the pipeline); the other ranks must not die of it.
    signal(SIGUSR1, SIG_IGN)
    let (transport, mpi) = try makeTransport(pipelineOptions, modelOptions)
    let rankLabel = transport.worldSize > 1 ? transport.rank : nil
    do {
        let directory = try ModelDirectory(modelOptions.modelURL)
        let progress = Progress(enabled: transport.rank == 0 && isatty(2) != 0)
        try await PipelineRuntime.serve(
            transport: transport, directory: directory, options: try pipelineOptions.pipeline(modelOptions), maxQueued: maxQueued,
            progress: { progress.update("loading \(directory.url.lastPathComponent): \($0)") }
        ) { engine in
            progress.finish()
            try await start(engine)
        }
        if ProcessInfo.processInfo.environment["FLAMINGO_MEMORY_REPORT"] == "1" {
            // A diagnostic for soaks: how much of this rank's memory is the tensor caches.
            let rss = String(format: "%.1f MB", Double(ProcessMemory.residentBytes) / 1e6)
            FileHandle.standardError.write(Data("memory: rank \(transport.rank): RSS \(rss); tensor memory \(TensorMemory.statistics)\n".utf8))
        }
        mpi?.finalize()
    } catch let code as ExitCode {
        exit(code.rawValue)
    } catch {
        printError(error, rank: rankLabel)
        exit(1)
    }
}

func printError(_ error: Error, rank: Int?) {
    let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
    let prefix = rank.map { "rank \($0): " } ?? ""
    FileHandle.standardError.write(Data("error: \(prefix)\(message)\n".utf8))
}

func printStats(_ report: RunReport) {
    var lines = ["rank  role                                  layers   weights     peak RSS    compute s  wait s    sent        received"]
    for s in report.stats {
        let layers = s.layerStart == s.layerEnd ? "-" : "\(s.layerStart)-\(s.layerEnd - 1)"
        lines.append(String(format: "%4d  %@ %@ %@ %@ %9.2f  %7.2f  %@ %@", s.rank,
                            s.role.padding(toLength: 37, withPad: " ", startingAt: 0),
                            layers.padding(toLength: 8, withPad: " ", startingAt: 0),
                            megabytes(Int(s.weightBytes)), megabytes(Int(s.peakRSSBytes)),
                            s.computeSeconds, s.waitSeconds, megabytes(Int(s.bytesSent)), megabytes(Int(s.bytesReceived))))
    }
    FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
}

func megabytes(_ bytes: Int) -> String {
    String(format: "%8.1f MB", Double(bytes) / 1e6).padding(toLength: 11, withPad: " ", startingAt: 0)
}

func writeStatsJSON(_ report: RunReport, to path: String) throws {
    try jsonData(StatsJSON(seconds: report.seconds, ranks: report.stats.map(StatsJSON.Rank.init),
                           requests: report.timings.map(StatsJSON.Request.init)), pretty: true)
        .write(to: URL(fileURLWithPath: path))
}

/// `--stats-json`: the run's wall time and every rank's statistics.
private struct StatsJSON: Encodable {
    struct Rank: Encodable {
        let rank: UInt32
        let role: String
        let layerStart: UInt32
        let layerEnd: UInt32
        let weightBytes: UInt64
        let peakRSSBytes: UInt64
        let computeSeconds: Double
        let waitSeconds: Double
        let bytesSent: UInt64
        let bytesReceived: UInt64
        let peakCacheBytes: UInt64

        enum CodingKeys: String, CodingKey {
            case rank, role, layerStart = "layer_start", layerEnd = "layer_end", weightBytes = "weight_bytes",
                 peakRSSBytes = "peak_rss_bytes", computeSeconds = "compute_seconds", waitSeconds = "wait_seconds",
                 bytesSent = "bytes_sent", bytesReceived = "bytes_received", peakCacheBytes = "peak_cache_bytes"
        }

        init(_ s: RankStats) {
            rank = s.rank
            role = s.role
            layerStart = s.layerStart
            layerEnd = s.layerEnd
            weightBytes = s.weightBytes
            peakRSSBytes = s.peakRSSBytes
            computeSeconds = s.computeSeconds
            waitSeconds = s.waitSeconds
            bytesSent = s.bytesSent
            bytesReceived = s.bytesReceived
            peakCacheBytes = s.cacheBytes
        }
    }

    /// One request's first and last token, in seconds from the first dispatch.
    struct Request: Encodable {
        let firstTokenSeconds: Double
        let lastTokenSeconds: Double
        let tokens: Int
        enum CodingKeys: String, CodingKey {
            case firstTokenSeconds = "first_token_seconds", lastTokenSeconds = "last_token_seconds", tokens
        }
        init(_ t: RequestTiming) {
            firstTokenSeconds = t.firstTokenSeconds
            lastTokenSeconds = t.lastTokenSeconds
            tokens = t.tokens
        }
    }

    let seconds: Double
    let ranks: [Rank]
    let requests: [Request]
}
