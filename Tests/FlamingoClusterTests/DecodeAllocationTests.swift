import FlamingoCore
import FlamingoModel
import Foundation
import Testing
import FlamingoCluster

// `flamingo generate` in one process runs the pipeline on one in-process rank (PipelineRuntime:
// Coordinator → StageWorker → LanguageModel → logits → sampling). After two decode steps of
// warm-up, its decode steps take all their tensor memory and kernel scratch from the caching
// allocator's caches: zero system allocations (TensorMemory). Measured as in
// FlamingoModelTests/DecodeAllocationTests.swift: each run on a fresh thread (an empty cache no
// other thread touches), the same request for 1, 2, ... new tokens, consecutive differences of
// the thread's own-cache misses. Each run loads the model too (as `generate` does); that is the
// same work in every run, so it cancels out.

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")


@Test(arguments: [("bf16", false), ("bf16", true)])
func pipelineDecodeStepsAfterWarmUpMakeNoSystemAllocations(fixture: String, int8: Bool) throws {
    let dir = fixtures.appendingPathComponent(fixture)
    let directory = try ModelDirectory(dir)
    let image = dir.appendingPathComponent("../images/circle.png").standardized.path
    let options = { var o = PipelineOptions(); o.quantizeMatrices = int8; return o }()
    @Sendable func generate(_ maxTokens: Int) throws -> [Int] {
        var request = try RequestBuilder(directory: directory).request(
            prompt: "<image>A picture of", inputIDs: nil, imagePaths: [image], maxTokens: maxTokens, sampling: .greedy)
        request.stopTokens = []  // every generation runs to its length
        let report = try PipelineRuntime.run(transport: InProcessTransport(), directory: directory, options: options) { [request] }
        return try #require(report).results[0].tokens
    }
    _ = try TensorMemory.measuredOnNewThread { try generate(10) }  // one-time process set-up out of the way
    var misses: [Int] = []
    var previous: [Int] = []
    for n in 1...10 {
        let (tokens, stats) = try TensorMemory.measuredOnNewThread { try generate(n) }
        #expect(tokens.count == n && Array(tokens.prefix(previous.count)) == previous, "\(n) tokens: \(tokens) after \(previous)")
        previous = tokens
        misses.append(stats.ownCacheMisses)
    }
    let steps = zip(misses.dropFirst(), misses).map { $0 - $1 }
    print("pipeline \(fixture)\(int8 ? " int8" : ""): own-cache misses per decode step \(steps)")
    #expect(steps.dropFirst(2).allSatisfy { $0 == 0 }, "pipeline \(fixture)\(int8 ? " int8" : ""): decode steps 3... allocated: \(steps)")
}
