import FlamingoCore
import FlamingoModel

/// What the planner needs to know about a model: bytes and work per part, by ownership class
/// (INPUT = vision + resampler + embeddings, REPEATING = a decoder layer and the gated
/// cross-attention block before it, OUTPUT = final norm + head). Built from the model's own
/// weight table (a checkpoint's, or a shapes-only dry run of loading), so the bytes per rank are
/// what loading maps. No tensor names past this file's table reader.
public struct ModelShape: Sendable, Equatable {
    public var name: String
    public var layerCount: Int { layerBytes.count }
    public var hiddenSize: Int
    /// A gated cross-attention block runs before layer i when i % interval == 0.
    public var crossLayerInterval: Int
    /// Weight bytes of layer i with the gated cross-attention block before it (if any).
    public var layerBytes: [Int]
    /// Of those, the bytes read for every generated token (a block's k/v projections run once per image).
    public var layerBytesPerToken: [Int]
    /// Multiply-adds per token of layer i with its block (one per weight read).
    public var layerMACsPerToken: [Int]
    /// Vision encoder + resampler.
    public var visionBytes: Int
    public var embeddingBytes: Int
    /// Final norm and head (with tied embeddings: the embedding table the head reads).
    public var headBytes: Int
    public var headMACsPerToken: Int
    /// The head reads the embedding table (tied): a rank holding both maps it once.
    public var headSharesEmbedding = false
    public var totalParameters: Int
    /// Multiply-adds per image in the vision encoder and resampler.
    public var visionMACsPerImage: Int
    public var maxPositions: Int

    /// KV-cache bytes per token per layer (f32 keys and values).
    public var kvBytesPerTokenPerLayer: Int { 2 * hiddenSize * 4 }

    public func hasCrossBlock(beforeLayer layer: Int) -> Bool { layer % crossLayerInterval == 0 }

    public var crossBlockCount: Int { (0..<layerCount).filter(hasCrossBlock).count }
}

/// One tensor as loading takes it: bytes mapped (or made) and weight values it holds.
public struct WeightTableEntry: Sendable {
    public var name: String
    public var bytes: Int
    public var parameters: Int

    public init(name: String, bytes: Int, parameters: Int) {
        self.name = name
        self.bytes = bytes
        self.parameters = parameters
    }
}

extension ModelShape {
    /// The shape of an IDEFICS-architecture model from its weight table.
    public init(config c: FlamingoConfig, table: [WeightTableEntry], name: String) {
        let layers = c.text.layerCount
        var layerBytes = [Int](repeating: 0, count: layers), perToken = layerBytes, macs = layerBytes
        var vision = 0, embedding = 0, head = 0, headMACs = 0, parameters = 0, lmHeadSeen = false
        func index(after prefix: String, in name: String) -> Int? {
            Int(name.dropFirst(prefix.count + 1).prefix { $0 != "." })
        }
        for e in table where !WeightMap.isIgnorable(e.name) {
            parameters += e.parameters
            let n = e.name
            if n.hasPrefix(WeightMap.vision + ".") || n.hasPrefix(WeightMap.resampler + ".") {
                vision += e.bytes
            } else if n.hasPrefix(WeightMap.embedding + ".") {
                embedding += e.bytes
            } else if n.hasPrefix(WeightMap.layers + "."), let i = index(after: WeightMap.layers, in: n), i < layers {
                layerBytes[i] += e.bytes
                perToken[i] += e.bytes
                macs[i] += e.parameters
            } else if n.hasPrefix(WeightMap.crossAttentionLayers + "."), let b = index(after: WeightMap.crossAttentionLayers, in: n),
                      b * c.crossLayerInterval < layers {
                let i = b * c.crossLayerInterval
                layerBytes[i] += e.bytes
                if !WeightMap.isPerImage(n) {
                    perToken[i] += e.bytes
                    macs[i] += e.parameters
                }
            } else if WeightMap.outputHead.contains(where: { n.hasPrefix($0) }) {
                head += e.bytes
                headMACs += e.parameters
                lmHeadSeen = lmHeadSeen || n.hasPrefix("lm_head.")
            }
        }
        let tied = c.text.tieWordEmbeddings && !lmHeadSeen
        if tied {
            // The head reads the embedding table: the last LM rank maps it too.
            head += embedding
            headMACs += c.text.totalVocabSize * c.text.hiddenSize
        }
        let v = c.vision
        let tokens = v.tokensPerImage
        let visionLayerMACs = 4 * v.hiddenSize * v.hiddenSize + 2 * v.hiddenSize * v.intermediateSize
        var visionMACs = tokens * (v.layerCount * visionLayerMACs + 3 * v.patchSize * v.patchSize * v.hiddenSize / max(1, tokens))
            + v.layerCount * 2 * tokens * tokens * v.hiddenSize
        if c.useResampler {
            let r = c.resampler, inner = r.headCount * r.headDim, dv = v.hiddenSize
            visionMACs += r.depth * (tokens + r.latentCount) * (4 * dv * inner + 8 * dv * dv)
        }
        self.init(name: name, hiddenSize: c.text.hiddenSize, crossLayerInterval: c.crossLayerInterval,
                  layerBytes: layerBytes, layerBytesPerToken: perToken, layerMACsPerToken: macs,
                  visionBytes: vision, embeddingBytes: embedding, headBytes: head, headMACsPerToken: headMACs,
                  headSharesEmbedding: tied, totalParameters: parameters, visionMACsPerImage: visionMACs,
                  maxPositions: c.text.maxPositionEmbeddings)
    }

    /// A shapes-only dry run of loading `config` with `dtype` weights (int8 matrices when
    /// `int8Matrices`, as `--quantize int8` or `flamingo quantize` make them): exactly what a load
    /// maps, without weights.
    public init(config: FlamingoConfig, dtype: DType, int8Matrices: Bool = false, name: String) throws {
        let store = WeightStore(shapesOnly: dtype, quantizeMatrices: int8Matrices)
        _ = try Flamingo(config: config, weights: store, parts: .all(config))
        self.init(config: config, table: Self.table(of: store), name: name)
    }

    /// A checkpoint directory's own tensor table (what loading it maps).
    public init(config: FlamingoConfig, weights: WeightStore, name: String) {
        let table = weights.tensorNames.compactMap { name -> WeightTableEntry? in
            guard let e = weights.entry(name) else { return nil }
            let isScale = name.hasSuffix(WeightStore.int8ScalesSuffix)
            return WeightTableEntry(name: name, bytes: e.range.count, parameters: isScale ? 0 : e.range.count / e.dtype.size)
        }
        self.init(config: config, table: table, name: name)
    }

    /// What loading `directory` will map: its own tensor table, or, when its float matrices are to be
    /// quantized at load, a dry run of that load.
    public static func forLoading(directory: ModelDirectory, weights: WeightStore, quantizeMatrices: Bool) throws -> ModelShape {
        let name = directory.url.lastPathComponent
        guard quantizeMatrices, directory.config.quantization == nil else {
            return ModelShape(config: directory.config, weights: weights, name: name)
        }
        // The dense dtype of the checkpoint's first matrix stands for the tensors left unquantized.
        let stored = weights.tensorNames.first { WeightMap.isQuantizable($0) }.flatMap { weights.entry($0)?.dtype } ?? .bf16
        return try ModelShape(config: directory.config, dtype: stored, int8Matrices: true, name: name)
    }

    static func table(of store: WeightStore) -> [WeightTableEntry] {
        let params = store.takenParametersByName
        return store.takenBytesByName.map { WeightTableEntry(name: $0.key, bytes: $0.value, parameters: params[$0.key] ?? 0) }
    }

    /// The paper's models (Chinchilla LM with a 4x GELU FFW, NFNet-F6 vision encoder of ~438M
    /// parameters with 1536-wide features, a 6-layer resampler with 64 latents). No checkpoint
    /// layout exists for them yet, so their bytes come from parameter counts.
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
            name: name, hiddenSize: width, crossLayerInterval: interval,
            layerBytes: layerBytes, layerBytesPerToken: perToken, layerMACsPerToken: macs,
            visionBytes: otherBytes(nfnetF6 + resampler), embeddingBytes: otherBytes(32000 * width),
            headBytes: matrixBytes(32000 * width) + otherBytes(width), headMACsPerToken: 32000 * width,
            totalParameters: layers * (layer + 2 * width) + blocks * (block + 2 * width + 2) + 2 * 32000 * width + nfnetF6 + resampler,
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

    /// The shape with weight matrices in `format` (int8: the language model's matrices, everything
    /// else bf16, as `flamingo quantize` leaves a bf16 checkpoint).
    public func shape(format: WeightFormat) -> ModelShape {
        let config: FlamingoConfig
        switch self {
        case .flamingo3b: return .paperFlamingo(name: rawValue, layers: 24, width: 2048, interval: 1, format: format)
        case .flamingo9b: return .paperFlamingo(name: rawValue, layers: 40, width: 4096, interval: 4, format: format)
        case .flamingo80b: return .paperFlamingo(name: rawValue, layers: 80, width: 8192, interval: 7, format: format)
        case .idefics9b: config = Preset.idefics9b.config
        case .idefics80b: config = Preset.idefics80b.config
        case .bench1b: config = Preset.bench1b.config
        }
        let dtype: DType = switch format {
        case .f32: .f32
        case .f16: .f16
        case .bf16, .int8: .bf16
        }
        do {
            return try ModelShape(config: config, dtype: dtype, int8Matrices: format == .int8, name: rawValue)
        } catch {
            preconditionFailure("preset \(rawValue) does not load: \(error)")
        }
    }

    public func shape(dtype: DType) -> ModelShape { shape(format: WeightFormat(dtype: dtype) ?? .int8) }
}
