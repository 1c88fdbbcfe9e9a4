import Foundation

// What `flamingo profile` measures on a machine and `flamingo simulate` predicts from: the seconds
// each part of one model takes for a step, and the link between ranks. Written as JSON with
// snake_case keys (docs/scaling.md describes the fields).

/// Seconds one model part takes for a step of `tokens` tokens (the rows of the step, whatever
/// sequences they belong to), plus a cost per attended (query, key) pair.
public struct StepCost: Codable, Sendable, Equatable {
    /// Step sizes measured, ascending, with their seconds at negligible context.
    public var tokens: [Int]
    public var seconds: [Double]
    /// Extra seconds per (query token, attended key) pair.
    public var secondsPerAttendedPair: Double

    public init(tokens: [Int], seconds: [Double], secondsPerAttendedPair: Double = 0) {
        precondition(tokens.count == seconds.count && !tokens.isEmpty, "a step cost needs matching points")
        self.tokens = tokens
        self.seconds = seconds
        self.secondsPerAttendedPair = secondsPerAttendedPair
    }

    /// Linear between measured points; below the first, the first point's time (the weight stream
    /// dominates small steps); beyond the last, the last segment's slope.
    public func seconds(tokens n: Int, attendedPairs: Double = 0) -> Double {
        let attention = secondsPerAttendedPair * attendedPairs
        guard n > 0 else { return 0 }
        if n <= tokens[0] || tokens.count == 1 {
            let base = tokens.count == 1 ? seconds[0] * max(1, Double(n) / Double(tokens[0])) : seconds[0]
            return base + attention
        }
        var i = 1
        while i < tokens.count - 1 && tokens[i] < n { i += 1 }
        let (x0, x1) = (Double(tokens[i - 1]), Double(tokens[i]))
        let (y0, y1) = (seconds[i - 1], seconds[i])
        let t = y0 + (y1 - y0) * (Double(n) - x0) / (x1 - x0)
        return max(t, 0) + attention
    }
}

/// A link between two ranks: a message of b bytes takes `latency + b / bandwidth` to arrive.
public struct LinkCost: Codable, Sendable, Equatable {
    public var latencySeconds: Double
    public var bytesPerSecond: Double
    /// Allreduce of `bytes` over `ranks` ranks, measured (nil: modelled as a ring from the two above).
    public var allreduce: [AllreducePoint]?

    public struct AllreducePoint: Codable, Sendable, Equatable {
        public var ranks: Int
        public var bytes: Int
        public var seconds: Double
        public init(ranks: Int, bytes: Int, seconds: Double) {
            self.ranks = ranks
            self.bytes = bytes
            self.seconds = seconds
        }
    }

    public init(latencySeconds: Double, bytesPerSecond: Double, allreduce: [AllreducePoint]? = nil) {
        self.latencySeconds = latencySeconds
        self.bytesPerSecond = bytesPerSecond
        self.allreduce = allreduce
    }

    public func transferSeconds(bytes: Int) -> Double { latencySeconds + Double(bytes) / bytesPerSecond }

    /// The runtime's allreduce (`TensorParallelGroup`): every rank sends its partial to each of the
    /// n-1 others at once, so one latency plus n-1 partials through its link; or the measured
    /// figure for this rank count, linear in bytes between measured sizes.
    public func allreduceSeconds(bytes: Int, ranks n: Int) -> Double {
        guard n > 1 else { return 0 }
        if let points = allreduce?.filter({ $0.ranks == n }).sorted(by: { $0.bytes < $1.bytes }), !points.isEmpty {
            let cost = StepCost(tokens: points.map(\.bytes), seconds: points.map(\.seconds))
            return cost.seconds(tokens: bytes)
        }
        return latencySeconds + Double((n - 1) * bytes) / bytesPerSecond
    }

    /// "0.2ms,1Gbit" or "50us,10Gbit" or "0.0002,125000000" (seconds, bytes per second).
    public init?(parsing text: String) {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard parts.count == 2, let latency = Self.seconds(parts[0]), let rate = Self.bytesPerSecond(parts[1]),
              latency >= 0, rate > 0 else { return nil }
        self.init(latencySeconds: latency, bytesPerSecond: rate)
    }

    private static func seconds(_ t: String) -> Double? {
        for (suffix, scale) in [("us", 1e-6), ("ms", 1e-3), ("s", 1.0)] where t.hasSuffix(suffix) {
            return Double(t.dropLast(suffix.count)).map { $0 * scale }
        }
        return Double(t)
    }

    private static func bytesPerSecond(_ t: String) -> Double? {
        for (suffix, scale) in [("gbit", 1e9 / 8), ("mbit", 1e6 / 8), ("gb/s", 1e9), ("mb/s", 1e6)] where t.hasSuffix(suffix) {
            return Double(t.dropLast(suffix.count)).map { $0 * scale }
        }
        return Double(t)
    }
}

/// One machine's measured costs for one model shape.
public struct Calibration: Codable, Sendable, Equatable {
    public struct Machine: Codable, Sendable, Equatable {
        public var cpu: String
        public var features: [String]
        public var threads: Int
        public var kernels: String
        public init(cpu: String, features: [String], threads: Int, kernels: String) {
            self.cpu = cpu
            self.features = features
            self.threads = threads
            self.kernels = kernels
        }
    }

    /// The preset or model directory name the costs are for.
    public var model: String
    public var dtype: String
    public var machine: Machine
    public var hiddenSize: Int
    public var vocabularySize: Int
    public var visualTokensPerImage: Int
    public var visualTokenWidth: Int
    /// Bytes of one image's pixels as the coordinator sends them (f32).
    public var pixelBytesPerImage: Int
    /// One decoder layer (self-attention + MLP); attended pairs: each query token with every
    /// cached key before it.
    public var decoderLayer: StepCost
    /// One gated cross-attention block; attended pairs: each token with its image's visual tokens.
    public var crossAttentionBlock: StepCost
    /// Final norm + head, per row of logits.
    public var outputHead: StepCost
    /// Vision encoder and resampler, per image.
    public var visionSecondsPerImage: Double
    /// A block's key/value projections of one image's visual tokens (once per image per block).
    public var imageAttachSecondsPerBlock: Double
    /// KV cache bytes per token per decoder layer, and per image per cross-attention block.
    public var cacheBytesPerTokenPerLayer: Int
    public var cacheBytesPerImagePerBlock: Int
    /// What the parts' measured times were multiplied by, per step size, so they add up to the same
    /// parts run in sequence (embeddings, layers, head: decode and prefill steps).
    public var sequenceScale: [Double]
    /// Relative speed of each rank (rank order) when profiled under mpirun.
    public var rankSpeeds: [Double]?
    /// k ranks computing at once on this one machine each run this many times slower (k = 1...),
    /// when profiled with `--shared-host-ranks`: from the cores and from one rank's weight stream
    /// (`singleRankStreamGBps`) against the machine's read rate (`machineReadGBps`).
    public var sharedHostSlowdown: [Double]?
    public var singleRankStreamGBps: Double?
    public var machineReadGBps: Double?
    /// The link between ranks, when profiled under mpirun.
    public var link: LinkCost?

    public init(model: String, dtype: String, machine: Machine, hiddenSize: Int, vocabularySize: Int,
                visualTokensPerImage: Int, visualTokenWidth: Int, pixelBytesPerImage: Int, decoderLayer: StepCost,
                crossAttentionBlock: StepCost, outputHead: StepCost, visionSecondsPerImage: Double,
                imageAttachSecondsPerBlock: Double, cacheBytesPerTokenPerLayer: Int, cacheBytesPerImagePerBlock: Int,
                sequenceScale: [Double] = [], rankSpeeds: [Double]? = nil, link: LinkCost? = nil) {
        self.sequenceScale = sequenceScale
        self.model = model
        self.dtype = dtype
        self.machine = machine
        self.hiddenSize = hiddenSize
        self.vocabularySize = vocabularySize
        self.visualTokensPerImage = visualTokensPerImage
        self.visualTokenWidth = visualTokenWidth
        self.pixelBytesPerImage = pixelBytesPerImage
        self.decoderLayer = decoderLayer
        self.crossAttentionBlock = crossAttentionBlock
        self.outputHead = outputHead
        self.visionSecondsPerImage = visionSecondsPerImage
        self.imageAttachSecondsPerBlock = imageAttachSecondsPerBlock
        self.cacheBytesPerTokenPerLayer = cacheBytesPerTokenPerLayer
        self.cacheBytesPerImagePerBlock = cacheBytesPerImagePerBlock
        self.rankSpeeds = rankSpeeds
        self.link = link
    }

    public static func read(_ url: URL) throws -> Calibration {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CalibrationError("cannot read calibration \(url.path): \(error.localizedDescription)")
        }
        do { return try decoder.decode(Calibration.self, from: data) } catch {
            throw CalibrationError("\(url.path) is not a calibration written by `flamingo profile`: \(error)")
        }
    }

    public func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: url)
    }

    private static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}

public struct CalibrationError: Error, LocalizedError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var errorDescription: String? { message }
}
