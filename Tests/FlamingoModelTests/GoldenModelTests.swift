import FlamingoCore
import Foundation
import Testing
import FlamingoModel

/// Fixture models and goldens written by scripts/reference/make_model_fixtures.py (PyTorch +
/// transformers on the same weights).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    static let models = root.appendingPathComponent("models")

    static var modelNames: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: models.path)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: models.appendingPathComponent($0).appendingPathComponent("golden.json").path) }.sorted()
    }
}

struct GoldenCase: Decodable {
    let name: String
    let input_ids: [Int]
    let pixel_values_npy: String?
    let logits_npy: String
    let greedy_tokens: [Int]
}

struct Golden: Decodable {
    let cases: [GoldenCase]
    let tolerance: GoldenTolerance
}

/// The fixture's own tolerance: 1e-3 for f32 numerics; larger for bf16 weights, whose activations
/// are rounded to bf16 (its `why` says how much two correct implementations differ there).
struct GoldenTolerance: Decodable {
    let max_abs_logit_diff: Float?
    let f32_max_abs_logit_diff: Float?
    var logits: Float { max_abs_logit_diff ?? f32_max_abs_logit_diff ?? 1e-3 }
}

@Test(arguments: Fixtures.modelNames)
func matchesTransformers(fixture: String) throws {
    let dir = Fixtures.models.appendingPathComponent(fixture)
    let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: dir.appendingPathComponent("golden.json")))
    let model = try ModelDirectory(dir).loadModel()
    let imageTokenID = model.configuration.imageTokenID ?? model.configuration.language.vocabularySize - 1
    let generator = Generator(model: model, imageTokenID: imageTokenID)
    #expect(!golden.cases.isEmpty)
    for c in golden.cases {
        var images: [Tensor] = []
        if let file = c.pixel_values_npy {
            let pixels = try NPY.read(dir.appendingPathComponent(file))
            let n = pixels.dim(0)
            let per = pixels.count / max(n, 1)
            let all = pixels.scalars
            images = (0..<n).map { Tensor(Array(all[($0 * per)..<(($0 + 1) * per)]), shape: Array(pixels.shape.dropFirst())) }
        }
        let request = GenerationRequest(promptTokens: c.input_ids, images: images, maxTokens: c.greedy_tokens.count,
                                        sampling: .greedy, stopTokens: Set(model.configuration.language.eosTokenIDs))
        let result = try generator.generate(request)
        let expected = try NPY.read(dir.appendingPathComponent(c.logits_npy)).scalars
        #expect(expected.count == result.promptLogits.count)
        let maxDiff = zip(expected, result.promptLogits).map { abs($0 - $1) }.max() ?? .infinity
        print("\(fixture)/\(c.name): max |logit diff| = \(maxDiff)")
        #expect(maxDiff <= golden.tolerance.logits, "\(fixture)/\(c.name): max |logit diff| \(maxDiff)")
        #expect(result.tokens == c.greedy_tokens, "\(fixture)/\(c.name)")
    }
}
