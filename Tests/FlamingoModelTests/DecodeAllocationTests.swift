import FlamingoCore
import FlamingoModel
import Foundation
import Testing

// After two decode steps of warm-up, a decode step takes all its tensor memory and kernel scratch
// from the caching allocator's caches: zero system allocations (TensorMemory).
//
// A generation runs on a fresh thread, whose cache starts empty and is touched by no other thread
// (tests run in parallel in this process), and the counters are that thread's. Decode allocates
// on the calling thread only (the kernels take their scratch before they fan out over the compute
// threads), so the thread's counters are everything decode asks of the allocator. Running the same
// request for 1, 2, ... new tokens, each on a fresh thread, the difference between consecutive
// runs is what one more decode step costs. The figure asserted is `ownCacheMisses` (allocations the
// thread's own cache could not serve), which bounds the system allocations and does not depend on
// what other threads left in the shared pool.


/// Own-cache misses of decode step k (k = 1 is the first step after prefill), for k < steps,
/// from generations of 1...steps tokens through `generate` (each token after the first is one
/// decode step). Also checks that the generations agree token for token.
func decodeStepMisses(steps: Int, generate: @escaping @Sendable (Int) throws -> [Int]) throws -> [Int] {
    _ = try TensorMemory.measuredOnNewThread { try generate(steps) }  // one-time process set-up out of the way
    var misses: [Int] = []
    var previous: [Int] = []
    for n in 1...steps {
        let (tokens, stats) = try TensorMemory.measuredOnNewThread { try generate(n) }
        #expect(tokens.count == n && Array(tokens.prefix(previous.count)) == previous, "\(n) tokens: \(tokens) after \(previous)")
        previous = tokens
        misses.append(stats.ownCacheMisses)
    }
    return zip(misses.dropFirst(), misses).map { $0 - $1 }
}

/// The one-image golden case of a fixture (prompt ids and pixels).
func oneImageRequest(_ dir: URL) throws -> GenerationRequest {
    let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: dir.appendingPathComponent("golden.json")))
    let c = try #require(golden.cases.first { $0.name == "one_image" })
    let pixels = try NPY.read(dir.appendingPathComponent(try #require(c.pixel_values_npy)))
    let image = pixels.reshaped(Array(pixels.shape.dropFirst()))
    // No stop tokens: every generation runs to its length.
    return GenerationRequest(promptTokens: c.input_ids, images: [image], maxTokens: 1, sampling: .greedy, stopTokens: [])
}

/// The in-process `Generator` (LanguageModel.forward, OutputHead, SequenceOutput) on bf16 weights
/// (bf16-rounding scratch), the same quantized to int8 at load (q8 activation scratch), and f32
/// weights with q/k norms.
@Test(arguments: [("bf16", false), ("bf16", true), ("interval2_qknorm", false)])
func generatorDecodeStepsAfterWarmUpMakeNoSystemAllocations(fixture: String, int8: Bool) throws {
    let dir = Fixtures.models.appendingPathComponent(fixture)
    let directory = try ModelDirectory(dir)
    let model = try directory.loadModel(quantizeMatrices: int8)
    let generator = Generator(model: model, imageTokenID: directory.imageTokenID)
    let request = try oneImageRequest(dir)
    let steps = try decodeStepMisses(steps: 10) { n in
        var r = request
        r.maxTokens = n
        return try generator.generate(r).tokens
    }
    print("\(fixture)\(int8 ? " int8" : ""): own-cache misses per decode step \(steps)")
    #expect(steps.dropFirst(2).allSatisfy { $0 == 0 }, "\(fixture)\(int8 ? " int8" : ""): decode steps 3... allocated: \(steps)")
}
