import FlamingoCore
import FlamingoModel

/// What the planner needs to know about a model: bytes and work per part, by ownership class
/// (INPUT = vision + resampler + embeddings, REPEATING = a decoder layer and the gated
/// cross-attention block before it, OUTPUT = final norm + head). No tensor names.
public struct ModelShape: Sendable, Equatable {
    public var name: String
    public var layerCount: Int
    public var hiddenSize: Int
    /// Bytes per weight element.
    public var elementSize: Int
    /// Parameters of one decoder layer.
    public var layerParameters: Int
    /// A gated cross-attention block runs before layer i when i % interval == 0.
    public var crossLayerInterval: Int
    /// Parameters of one gated cross-attention block.
    public var crossBlockParameters: Int
    /// Of those, the ones read for every token (k/v projections run once per image).
    public var crossBlockParametersPerToken: Int
    public var embeddingParameters: Int
    public var headParameters: Int
    /// Vision encoder + resampler.
    public var visionParameters: Int
    /// Multiply-adds per image in the vision encoder and resampler.
    public var visionMACsPerImage: Int
    public var maxPositions: Int

    /// KV-cache bytes per token per layer (f32 keys and values).
    public var kvBytesPerTokenPerLayer: Int { 2 * hiddenSize * 4 }

    public func hasCrossBlock(beforeLayer layer: Int) -> Bool { layer % crossLayerInterval == 0 }

    /// Weight bytes of layer `i` with its cross-attention block.
    public func weightBytes(layer i: Int) -> Int {
        (layerParameters + (hasCrossBlock(beforeLayer: i) ? crossBlockParameters : 0)) * elementSize
    }

    /// Weight bytes read per generated token by layer `i` with its block: decode streams these.
    public func bytesPerToken(layer i: Int) -> Int {
        (layerParameters + (hasCrossBlock(beforeLayer: i) ? crossBlockParametersPerToken : 0)) * elementSize
    }

    /// Blocks before layers 0, interval, 2·interval, ...
    public var crossBlockCount: Int { (layerCount + crossLayerInterval - 1) / crossLayerInterval }

    public var totalParameters: Int {
        layerCount * layerParameters + crossBlockCount * crossBlockParameters
            + embeddingParameters + headParameters + visionParameters
    }
}

extension ModelShape {
    /// The shape of an IDEFICS-architecture config with weights of `dtype`.
    public init(config c: FlamingoConfig, dtype: DType, name: String = "model") {
        let d = c.text.hiddenSize, ff = c.text.intermediateSize, dv = c.vision.hiddenSize
        let mlp = 3 * d * ff
        let attention = 4 * d * d
        let vision = c.vision
        let visionLayer = 4 * (dv * dv + dv) + 2 * dv * vision.intermediateSize + vision.intermediateSize + dv + 4 * dv
        let patch = 3 * vision.patchSize * vision.patchSize * dv
        var visionParameters = vision.layerCount * visionLayer + patch + (vision.tokensPerImage + 1) * dv + 4 * dv
        var visionMACs = vision.tokensPerImage * (vision.layerCount * visionLayer + patch / max(1, vision.tokensPerImage))
            + vision.layerCount * 2 * vision.tokensPerImage * vision.tokensPerImage * dv
        if c.useResampler {
            let r = c.resampler
            let inner = r.headCount * r.headDim
            let block = 4 * dv * inner + 8 * dv * dv + 6 * dv
            visionParameters += r.depth * block + r.latentCount * dv + 2 * dv
            visionMACs += r.depth * (vision.tokensPerImage + r.latentCount) * block
        }
        self.init(
            name: name, layerCount: c.text.layerCount, hiddenSize: d, elementSize: dtype.size,
            layerParameters: attention + mlp + 2 * d, crossLayerInterval: c.crossLayerInterval,
            crossBlockParameters: 2 * d * d + 2 * dv * d + mlp + 2 * d + 2,
            crossBlockParametersPerToken: 2 * d * d + mlp + 2 * d + 2,
            embeddingParameters: c.text.totalVocabSize * d,
            headParameters: c.text.totalVocabSize * d + d,
            visionParameters: visionParameters, visionMACsPerImage: visionMACs,
            maxPositions: c.text.maxPositionEmbeddings)
    }

    /// The paper's models (Chinchilla LM with a 4x GELU FFW, NFNet-F6 vision encoder of ~438M
    /// parameters with 1536-wide features, a 6-layer resampler with 64 latents).
    static func paperFlamingo(name: String, layers: Int, width: Int, interval: Int, dtype: DType) -> ModelShape {
        let dv = 1536
        let ffw = 2 * width * 4 * width
        let nfnetF6 = 438_000_000
        let resampler = 6 * (4 * dv * dv + 8 * dv * dv) + 64 * dv
        return ModelShape(
            name: name, layerCount: layers, hiddenSize: width, elementSize: dtype.size,
            layerParameters: 4 * width * width + ffw + 2 * width, crossLayerInterval: interval,
            crossBlockParameters: 2 * width * width + 2 * dv * width + ffw + 2 * width + 2,
            crossBlockParametersPerToken: 2 * width * width + ffw + 2 * width + 2,
            embeddingParameters: 32000 * width, headParameters: 32000 * width,
            visionParameters: nfnetF6 + resampler,
            // NFNet-F6 at 320px is ~377 GFLOPs per image.
            visionMACsPerImage: 188_000_000_000, maxPositions: 2048)
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

    public func shape(dtype: DType) -> ModelShape {
        switch self {
        case .flamingo3b: .paperFlamingo(name: rawValue, layers: 24, width: 2048, interval: 1, dtype: dtype)
        case .flamingo9b: .paperFlamingo(name: rawValue, layers: 40, width: 4096, interval: 4, dtype: dtype)
        case .flamingo80b: .paperFlamingo(name: rawValue, layers: 80, width: 8192, interval: 7, dtype: dtype)
        case .idefics9b: ModelShape(config: Preset.idefics9b.config, dtype: dtype, name: rawValue)
        case .idefics80b: ModelShape(config: Preset.idefics80b.config, dtype: dtype, name: rawValue)
        case .bench1b: ModelShape(config: Preset.bench1b.config, dtype: dtype, name: rawValue)
        }
    }
}
