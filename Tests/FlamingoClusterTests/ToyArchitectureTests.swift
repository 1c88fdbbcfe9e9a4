import FlamingoCore
import FlamingoModel
import Foundation
import Testing
import FlamingoCluster

// A second architecture, written and registered here in the test target from the shared layers
// alone: a patch-embedding vision stage, a decoder with grouped-query attention and llama3-scaled
// RoPE, cross-attention before an explicit list of layers, a plain head. Nothing in Cluster/,
// Server/ or the CLI knows it, yet the registry loads it from config.json, the planner sizes it
// from its own weight table, and the pipeline runs it on any number of ranks bit-identical to
// one process.

/// config.json of the toy architecture (`model_type: toy_vlm`).
struct ToyConfig: ModelConfiguration, Codable, Equatable {
    static let type = "toy_vlm"
    var modelType = ToyConfig.type
    var vocabSize = 96
    var hiddenSize = 48
    var intermediateSize = 80
    var layerCount = 5
    var headCount = 6
    var keyValueHeadCount = 2
    var crossAttentionLayers = [1, 3]
    var visionWidth = 40
    var imageSize = 16
    var patchSize = 4
    var imageTokenID: Int? = 95
    var eosTokenID = 2

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size", layerCount = "num_hidden_layers", headCount = "num_attention_heads"
        case keyValueHeadCount = "num_key_value_heads", crossAttentionLayers = "cross_attention_layers"
        case visionWidth = "vision_width", imageSize = "image_size", patchSize = "patch_size"
        case imageTokenID = "image_token_id", eosTokenID = "eos_token_id"
    }

    var decoder: DecoderLayerConfig {
        DecoderLayerConfig(hiddenSize: hiddenSize, intermediateSize: intermediateSize, headCount: headCount,
                           keyValueHeadCount: keyValueHeadCount, headDim: hiddenSize / headCount, activation: .silu,
                           rmsNormEps: 1e-5, ropeTheta: 10000,
                           ropeScaling: .llama3(factor: 2, lowFrequencyFactor: 1, highFrequencyFactor: 2, originalMaxPositions: 16))
    }
    var crossAttention: GatedCrossAttentionConfig {
        GatedCrossAttentionConfig(hiddenSize: hiddenSize, visualTokenWidth: visionWidth, headCount: headCount,
                                  intermediateSize: intermediateSize, activation: .silu, rmsNormEps: 1e-5, qkLayerNorms: true)
    }

    var language: LanguageShape {
        LanguageShape(vocabularySize: vocabSize, hiddenSize: hiddenSize, layerCount: layerCount, maxPositions: 256,
                      bosTokenID: 1, eosTokenIDs: [eosTokenID])
    }
    var visualTokensPerImage: Int { (imageSize / patchSize) * (imageSize / patchSize) }
    var visualTokenWidth: Int { visionWidth }
    var quantization: Int8Quantization? { nil }
    func crossAttends(layer: Int) -> Bool { crossAttentionLayers.contains(layer) }

    /// Every token from an image on sees the latest image (no reset at end of sequence).
    func imageIndices(tokens: [Int], imageTokenID: Int) -> [Int?] {
        var seen = -1
        return tokens.map { token in
            if token == imageTokenID { seen += 1 }
            return seen >= 0 ? seen : nil
        }
    }

    func loadModel(weights: WeightStore, parts: ModelParts, progress: (String) -> Void) throws -> any VisionLanguageModel {
        try ToyModel(config: self, weights: weights, parts: parts)
    }

    func withLayerCount(_ layerCount: Int) throws -> any ModelConfiguration {
        var c = self
        c.layerCount = layerCount
        return c
    }

    var summary: [(label: String, text: String)] { [("toy", "\(layerCount) layers")] }
}

struct ToyModel: VisionLanguageModel {
    let config: ToyConfig
    let parts: ModelParts
    let weights: WeightStore
    let patches: PatchEmbedding?
    let embedding: TokenEmbedding?
    let language: LanguageModel
    let head: OutputHead?

    var configuration: any ModelConfiguration { config }

    init(config: ToyConfig, weights: WeightStore, parts: ModelParts) throws {
        self.config = config
        self.parts = parts
        self.weights = weights
        let w = WeightScope(store: weights)
        patches = parts.vision ? try PatchEmbedding(w, "vision.patch.weight", width: config.visionWidth, channelCount: 3,
                                                    patchSize: config.patchSize) : nil
        embedding = parts.embedding ? try TokenEmbedding(w.scope("embed"), vocabSize: config.vocabSize, width: config.hiddenSize) : nil
        let lm = w.int8Eligible()
        language = try LanguageModel(layers: parts.layers, layerCount: config.layerCount, decoder: config.decoder,
                                     crossAttention: config.crossAttention, placement: .beforeLayers(config.crossAttentionLayers),
                                     layerScope: { lm.scope("layers", $0) }, blockScope: { lm.scope("cross", $0) })
        head = parts.outputHead ? try OutputHead(lm, norm: "norm", head: "head", vocabSize: config.vocabSize,
                                                 width: config.hiddenSize, eps: 1e-5, tiedEmbedding: nil) : nil
    }

    func visualTokens(pixels: Tensor) -> Tensor { patches!(pixels) }
    func embed(_ ids: [Int]) -> Tensor { embedding!(ids) }
    func logits(_ h: Tensor) -> Tensor { head!(h) }
    func makeCache() -> SequenceCache { language.makeCache() }
    func attachImage(_ visualTokens: Tensor, to cache: inout SequenceCache) { language.attachImage(visualTokens, to: &cache) }
    var crossAttends: Bool { language.crossAttends }
    func forward(_ h: inout Tensor, slices: [SequenceSlice], caches: inout [SequenceCache]) {
        language.forward(&h, slices: slices, caches: &caches)
    }
    var decodeTraffic: WeightTraffic { language.traffic + (head?.traffic ?? WeightTraffic()) }
    var matrixFormat: WeightFormat { language.matrixFormat }
}

/// Writes a toy checkpoint with random weights (as `flamingo synth` does) and returns its directory.
private func writeToyModel() throws -> URL {
    ModelRegistry.register(.init(ToyConfig.self, modelType: ToyConfig.type))
    let config = ToyConfig()
    let store = WeightStore(syntheticSeed: 7, dtype: .f32, keep: true)
    _ = try config.loadModel(weights: store, parts: .all(config))
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("toy-vlm-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    try JSONEncoder().encode(config).write(to: dir.appendingPathComponent("config.json"))
    try SafetensorsWriter.write(store.syntheticTensors, to: dir, maxShardBytes: 1 << 30)
    return dir
}

private func toyRequests(_ directory: ModelDirectory) -> [GenerationRequest] {
    let s = directory.config.imageSize
    let image = { (seed: Int) in Tensor((0..<(3 * s * s)).map { Float(($0 * 37 + seed) % 101) / 50 - 1 }, shape: [3, s, s]) }
    let prompts = [[1, 95, 10, 11, 12, 13], [1, 20, 21, 95, 22, 95, 23, 24], [1, 30, 31, 32]]
    return prompts.enumerated().map { i, p in
        GenerationRequest(promptTokens: p, images: (0..<p.filter { $0 == 95 }.count).map { image(i * 10 + $0) },
                          maxTokens: 6, sampling: .greedy, stopTokens: [])
    }
}

@Test func aRegisteredArchitectureRunsOnePipelineBitIdenticalToOneProcess() throws {
    let dir = try writeToyModel()
    defer { try? FileManager.default.removeItem(at: dir) }
    let directory = try ModelDirectory(dir)
    #expect(directory.config.modelType == ToyConfig.type)
    #expect(ModelRegistry.modelTypes.contains(ToyConfig.type))

    let model = try directory.loadModel()
    let generator = Generator(model: model, imageTokenID: directory.imageTokenID)
    let requests = toyRequests(directory)
    let single = try requests.map { try generator.generate($0) }
    for ranks in 1...4 {
        let transports = InProcessTransport.connected(worldSize: ranks)
        let group = DispatchGroup()
        for rank in 1..<ranks {
            let transport = transports[rank]
            group.enter()
            Thread.detachNewThread {
                _ = try? PipelineRuntime.run(transport: transport, directory: directory, options: PipelineOptions()) { [] }
                group.leave()
            }
        }
        let report = try #require(try PipelineRuntime.run(transport: transports[0], directory: directory,
                                                          options: PipelineOptions()) { requests })
        group.wait()
        #expect(report.results.map(\.tokens) == single.map(\.tokens), "toy on \(ranks) ranks")
        #expect(report.results.map(\.promptLogits) == single.map(\.promptLogits), "toy on \(ranks) ranks: logits not bit-identical")
    }
}

@Test func thePlannerSizesARegisteredArchitectureFromItsWeightTable() throws {
    let dir = try writeToyModel()
    defer { try? FileManager.default.removeItem(at: dir) }
    let directory = try ModelDirectory(dir)
    let stored = try WeightStore(directory: dir)
    for quantize in [false, true] {
        let shape = try ModelShape.forLoading(directory: directory, weights: stored, quantizeMatrices: quantize)
        #expect(shape.layerCrossAttends == [false, true, false, true, false])
        for ranks in 1...4 {
            let plan = try FlamingoCluster.plan(shape: shape, ranks: ranks)
            let loaded = try plan.stages.map { s in
                try directory.loadModel(parts: ModelParts(vision: s.vision, embedding: s.embedding, layers: s.layers,
                                                          outputHead: s.outputHead), quantizeMatrices: quantize).weightBytes
            }
            #expect(plan.stages.map(\.weightBytes) == loaded, "quantize=\(quantize) ranks=\(ranks)")
        }
    }
}
