import FlamingoCore
import Foundation
import Testing
import FlamingoModel

// The model restricted to layer ranges, chained, must equal the whole model bit for bit:
// that is what lets a pipeline stage be "the model over a range" and nothing else.

/// A fixture's model, its "interleaved" prompt, each token's image index and the images' visual tokens.
private func loadCase(_ fixture: String) throws -> (model: any VisionLanguageModel, tokens: [Int], index: [Int?], visual: [Tensor]) {
    let dir = Fixtures.models.appendingPathComponent(fixture)
    let model = try ModelDirectory(dir).loadModel()
    let config = model.configuration
    let (tokens, images) = try promptAndImages(dir)
    let imageToken = config.imageTokenID ?? config.language.vocabularySize - 1
    let index = config.imageIndices(tokens: tokens, imageTokenID: imageToken)
    return (model, tokens, index, images.map { model.visualTokens(pixels: $0) })
}

private func promptAndImages(_ dir: URL) throws -> (tokens: [Int], images: [Tensor]) {
    let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: dir.appendingPathComponent("golden.json")))
    let c = golden.cases.first { $0.name == "interleaved" } ?? golden.cases[0]
    var images: [Tensor] = []
    if let file = c.pixel_values_npy {
        let pixels = try NPY.read(dir.appendingPathComponent(file))
        let per = pixels.count / pixels.dim(0)
        let all = pixels.scalars
        images = (0..<pixels.dim(0)).map { Tensor(Array(all[($0 * per)..<(($0 + 1) * per)]), shape: Array(pixels.shape.dropFirst())) }
    }
    return (c.input_ids, images)
}

@Test(arguments: Fixtures.modelNames)
func chainedStagesEqualWholeModel(fixture: String) throws {
    let dir = Fixtures.models.appendingPathComponent(fixture)
    let (whole, tokens, index, visual) = try loadCase(fixture)
    let config = whole.configuration

    var reference = whole.embed(tokens)
    var cache = whole.makeCache()
    for v in visual { whole.attachImage(v, to: &cache) }
    whole.forward(&reference, imageIndex: index, cache: &cache)
    let expected = whole.logits(reference).scalars

    // Split the layers at every possible point into two stages, and into one stage per layer.
    let layers = config.language.layerCount
    var splits: [[Int]] = (1..<layers).map { [0, $0, layers] }
    splits.append(Array(0...layers))
    for bounds in splits {
        var h = whole.embed(tokens)
        for (a, b) in zip(bounds, bounds.dropFirst()) {
            let parts = ModelParts(vision: false, embedding: a == 0, layers: a..<b, outputHead: b == layers)
            let stage = try config.loadModel(weights: WeightStore(directory: dir), parts: parts)
            var stageCache = stage.makeCache()
            for v in visual { stage.attachImage(v, to: &stageCache) }
            stage.forward(&h, imageIndex: index, cache: &stageCache)
            if b == layers { h = stage.logits(h) }
        }
        #expect(h.scalars == expected, "\(fixture): stages \(bounds) differ from the whole model")
    }
}

@Test(arguments: Fixtures.modelNames)
func microbatchOfSequencesMatchesOneAtATime(fixture: String) throws {
    let (model, tokens, index, visual) = try loadCase(fixture)
    // Three sequences: the prompt, its first half, and the prompt again.
    let prompts = [tokens, Array(tokens.prefix(tokens.count / 2)), tokens]
    var separate: [[Float]] = []
    for p in prompts {
        var h = model.embed(p)
        var cache = model.makeCache()
        for v in visual { model.attachImage(v, to: &cache) }
        model.forward(&h, imageIndex: Array(index.prefix(p.count)), cache: &cache)
        separate.append(model.logits(h.rows((p.count - 1)..<p.count)).scalars)
    }
    var caches: [SequenceCache] = prompts.map { _ in
        var cache = model.makeCache()
        for v in visual { model.attachImage(v, to: &cache) }
        return cache
    }
    var slices: [SequenceSlice] = []
    var row = 0
    for p in prompts {
        slices.append(SequenceSlice(rows: row..<(row + p.count), imageIndex: Array(index.prefix(p.count))))
        row += p.count
    }
    var h = model.embed(prompts.flatMap { $0 })
    model.forward(&h, slices: slices, caches: &caches)
    for (s, slice) in slices.enumerated() {
        let logits = model.logits(h.rows((slice.rows.upperBound - 1)..<slice.rows.upperBound)).scalars
        let diff = zip(logits, separate[s]).map { abs($0 - $1) }.max() ?? .infinity
        #expect(diff <= 1e-4, "\(fixture): sequence \(s) in a microbatch differs by \(diff)")
    }
}
