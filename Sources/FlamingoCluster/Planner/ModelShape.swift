import FlamingoCore
import FlamingoModel

/// What the planner needs to know about a model: bytes and work per part, by ownership class
/// (INPUT = vision stage + embeddings, REPEATING = a decoder layer and the cross-attention block
/// before it, OUTPUT = final norm + head). Measured by dry runs of the architecture's own loading,
/// one part at a time (`init(configuration:dryRun:name:)`), so the bytes per rank are what loading
/// maps, for any architecture, with no tensor names or parameter formulas here.
public struct ModelShape: Sendable, Equatable {
    public var name: String
    public var layerCount: Int { layerBytes.count }
    public var hiddenSize: Int
    /// Whether layer i cross-attends (has a cross-attention block before it).
    public var layerCrossAttends: [Bool]
    /// Weight bytes of layer i with the cross-attention block before it (if any).
    public var layerBytes: [Int]
    /// Of those, the bytes read for every generated token (a block's k/v projections run once per image).
    public var layerBytesPerToken: [Int]
    /// Multiply-adds per token of layer i with its block.
    public var layerMACsPerToken: [Int]
    /// The vision stage (encoder and resampler).
    public var visionBytes: Int
    public var embeddingBytes: Int
    /// Final norm and head (with tied embeddings: the embedding table the head reads).
    public var headBytes: Int
    public var headMACsPerToken: Int
    /// The head reads the embedding table (tied): a rank holding both maps it once.
    public var headSharesEmbedding = false
    public var totalParameters: Int
    public var maxPositions: Int

    public func hasCrossBlock(beforeLayer layer: Int) -> Bool { layerCrossAttends[layer] }

    public var crossBlockCount: Int { layerCrossAttends.filter { $0 }.count }
}

extension ModelShape {
    /// Loads each part of `configuration` alone on a fresh store from `dryRun` (a shapes-only or
    /// dry-run store: nothing is read or allocated) and records what it takes.
    public init(configuration: any ModelConfiguration, dryRun: () -> WeightStore, name: String) throws {
        let layers = configuration.language.layerCount
        func load(_ parts: ModelParts) throws -> any VisionLanguageModel {
            try configuration.loadModel(weights: dryRun(), parts: parts)
        }
        func part(vision: Bool = false, embedding: Bool = false, layers range: Range<Int> = 0..<0, head: Bool = false) -> ModelParts {
            ModelParts(vision: vision, embedding: embedding, layers: range, outputHead: head)
        }
        let whole = try load(configuration.allParts)
        let vision = try load(part(vision: true)).weightBytes
        let embedding = try load(part(embedding: true)).weightBytes
        let head = try load(part(head: true))
        let inputAndOutput = try load(part(embedding: true, head: true)).weightBytes
        var bytes: [Int] = [], perToken: [Int] = [], macs: [Int] = []
        for i in 0..<layers {
            let layer = try load(part(layers: i..<(i + 1)))
            bytes.append(layer.weightBytes)
            perToken.append(layer.decodeTraffic.bytes)
            macs.append(layer.decodeTraffic.multiplyAdds)
        }
        self.init(name: name, hiddenSize: configuration.language.hiddenSize,
                  layerCrossAttends: (0..<layers).map(configuration.crossAttends(layer:)),
                  layerBytes: bytes, layerBytesPerToken: perToken, layerMACsPerToken: macs,
                  visionBytes: vision, embeddingBytes: embedding, headBytes: head.weightBytes,
                  headMACsPerToken: head.decodeTraffic.multiplyAdds,
                  headSharesEmbedding: inputAndOutput < embedding + head.weightBytes,
                  totalParameters: whole.weights.takenParameterCount, maxPositions: configuration.language.maxPositions)
    }

    /// A model of `configuration`'s shape with `dtype` weights (int8 matrices when `int8Matrices`,
    /// as `--quantize int8` or `flamingo quantize` make them), without weights.
    public init(configuration: any ModelConfiguration, dtype: DType, int8Matrices: Bool = false, name: String) throws {
        try self.init(configuration: configuration, dryRun: { WeightStore(shapesOnly: dtype, quantizeMatrices: int8Matrices) },
                      name: name)
    }

    /// What loading `directory` will map: a dry run over its own tensor table (quantized at load
    /// when `quantizeMatrices`).
    public static func forLoading(directory: ModelDirectory, weights: WeightStore, quantizeMatrices: Bool) throws -> ModelShape {
        try ModelShape(configuration: directory.config,
                       dryRun: { WeightStore(dryRunOf: weights, quantizeMatrices: quantizeMatrices) },
                       name: directory.url.lastPathComponent)
    }

    /// The paper's models (Chinchilla LM with a 4x GELU FFW, NFNet-F6 vision encoder of ~438M
    /// parameters with 1536-wide features, a 6-layer resampler with 64 latents). The one shape
    /// still written as formulas: no architecture with an NFNet vision tower is registered yet,
    /// so there is nothing to dry-run; they become config.json shapes with that architecture.
    static func paperFlamingo(name: String, layers: Int, width: Int, interval: Int, format: WeightFormat) -> ModelShape {
        let dv = 1536
        let ffw = 2 * width * 4 * width
        let nfnetF6 = 438_000_000
        let resampler = 6 * (4 * dv * dv + 8 * dv * dv) + 64 * dv
        let layer = 4 * width * width + ffw
        let block = 2 * width * width + 2 * dv * width + ffw
        let blockPerToken = 2 * width * width + ffw
        // Matrices in `format`; norms, gates, embeddings and vision in bf16 (f32 when format is f32).
        let matrixBytes: (Int) -> Int = { p in format == .int8 ? p + p / 16 : p * (format == .f32 ? 4 : 2) }
        let otherBytes: (Int) -> Int = { p in p * (format == .f32 ? 4 : 2) }
        let layerBytes = (0..<layers).map { i in matrixBytes(layer) + otherBytes(2 * width) + (i % interval == 0 ? matrixBytes(block) + otherBytes(2 * width + 2) : 0) }
        let perToken = (0..<layers).map { i in matrixBytes(layer) + otherBytes(2 * width) + (i % interval == 0 ? matrixBytes(blockPerToken) + otherBytes(2 * width + 2) : 0) }
        let macs = (0..<layers).map { i in layer + (i % interval == 0 ? blockPerToken : 0) }
        let blocks = (0..<layers).filter { $0 % interval == 0 }.count
        return ModelShape(
            name: name, hiddenSize: width, layerCrossAttends: (0..<layers).map { $0 % interval == 0 },
            layerBytes: layerBytes, layerBytesPerToken: perToken, layerMACsPerToken: macs,
            visionBytes: otherBytes(nfnetF6 + resampler), embeddingBytes: otherBytes(32000 * width),
            headBytes: matrixBytes(32000 * width) + otherBytes(width), headMACsPerToken: 32000 * width,
            totalParameters: layers * (layer + 2 * width) + blocks * (block + 2 * width + 2) + 2 * 32000 * width + nfnetF6 + resampler,
            maxPositions: 2048)
    }
}

/// Named shapes for `plan` and synthetic benchmarks (DESIGN.md §2, reference configurations).
public enum ShapePreset: String, CaseIterable, Sendable {
    case flamingo3b = "flamingo-3b"
    case flamingo9b = "flamingo-9b"
    case flamingo80b = "flamingo-80b"
    case idefics9b = "idefics-9b"
    case idefics80b = "idefics-80b"
    case bench1b = "bench-1b"

    /// The configuration behind a config-backed preset (nil for the paper's shapes, still formulas).
    public var configuration: (any ModelConfiguration)? {
        switch self {
        case .flamingo3b, .flamingo9b, .flamingo80b: nil
        case .idefics9b: Preset.idefics9b.config
        case .idefics80b: Preset.idefics80b.config
        case .bench1b: Preset.bench1b.config
        }
    }

    /// The shape with weight matrices in `format` (int8: the language model's matrices, everything
    /// else bf16, as `flamingo quantize` leaves a bf16 checkpoint).
    public func shape(format: WeightFormat) -> ModelShape {
        switch self {
        case .flamingo3b: return .paperFlamingo(name: rawValue, layers: 24, width: 2048, interval: 1, format: format)
        case .flamingo9b: return .paperFlamingo(name: rawValue, layers: 40, width: 4096, interval: 4, format: format)
        case .flamingo80b: return .paperFlamingo(name: rawValue, layers: 80, width: 8192, interval: 7, format: format)
        case .idefics9b, .idefics80b, .bench1b: break
        }
        let config = configuration!
        let dtype: DType = switch format {
        case .f32: .f32
        case .f16: .f16
        case .bf16, .int8: .bf16
        }
        do {
            return try ModelShape(configuration: config, dtype: dtype, int8Matrices: format == .int8, name: rawValue)
        } catch {
            preconditionFailure("preset \(rawValue) does not load: \(error)")
        }
    }

    public func shape(dtype: DType) -> ModelShape { shape(format: WeightFormat(dtype: dtype) ?? .int8) }
}
