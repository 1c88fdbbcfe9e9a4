import FlamingoCore
import FlamingoModel
import Foundation
import Testing
import FlamingoCluster

// The pipeline with ranks as threads of this process (frames really encoded and decoded):
// N in-process stages equal one process, and the serving engine streams, batches and cancels.

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

private struct Case: Decodable {
    let input_ids: [Int]
    let images: [String]
    let greedy_tokens: [Int]
}

private struct Golden: Decodable { let cases: [Case] }

private func requests(_ fixture: String, maxTokens: Int? = nil) throws -> (ModelDirectory, [GenerationRequest], [Case]) {
    let dir = fixtures.appendingPathComponent(fixture)
    let directory = try ModelDirectory(dir)
    let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: dir.appendingPathComponent("golden.json")))
    let builder = RequestBuilder(directory: directory)
    let built = try golden.cases.map { c in
        try builder.request(prompt: nil, inputIDs: c.input_ids,
                            imagePaths: c.images.map { dir.appendingPathComponent($0).standardized.path },
                            maxTokens: maxTokens ?? c.greedy_tokens.count, sampling: .greedy)
    }
    return (directory, built, golden.cases)
}

/// Runs `PipelineRuntime.run` on `worldSize` in-process ranks (threads); returns rank 0's report.
private func runInProcess(worldSize: Int, directory: ModelDirectory, requests: [GenerationRequest]) throws -> RunReport {
    let transports = InProcessTransport.connected(worldSize: worldSize)
    let group = DispatchGroup()
    for rank in 1..<worldSize {
        let transport = transports[rank]
        group.enter()
        Thread.detachNewThread {
            _ = try? PipelineRuntime.run(transport: transport, directory: directory, options: PipelineOptions()) { [] }
            group.leave()
        }
    }
    let report = try PipelineRuntime.run(transport: transports[0], directory: directory, options: PipelineOptions()) { requests }
    group.wait()
    // Every frame sent between ranks was received, and counted on both sides. (Alone, rank 0's
    // last messages to its own stage, freeing caches, are still queued when the run ends.)
    if worldSize > 1 {
        let sent = transports.map(\.counters.bytesSent).reduce(0, +)
        let received = transports.map(\.counters.bytesReceived).reduce(0, +)
        #expect(sent == received && sent > 0, "sent \(sent) bytes, received \(received): \(transports.map(\.counters))")
    }
    return report!
}

@Test(arguments: ["interval2_qknorm", "interval3_noresampler", "bf16"])
func inProcessStagesEqualOneProcess(fixture: String) throws {
    let (directory, reqs, cases) = try requests(fixture)
    let single = try runInProcess(worldSize: 1, directory: directory, requests: reqs)
    for (result, c) in zip(single.results, cases) { #expect(result.tokens == c.greedy_tokens) }
    for n in 2...4 {
        let split = try runInProcess(worldSize: n, directory: directory, requests: reqs)
        #expect(split.results.map(\.tokens) == single.results.map(\.tokens), "\(fixture) on \(n) ranks")
        #expect(split.results.map(\.promptLogits) == single.results.map(\.promptLogits), "\(fixture) on \(n) ranks: logits not bit-identical")
    }
}

/// Starts a serving engine on `worldSize` in-process ranks; `body` uses it; then shuts down.
private func withEngine(worldSize: Int, fixture: String, maxQueued: Int = 64,
                        _ body: @escaping @Sendable (PipelineEngine) async throws -> Void) async throws {
    let directory = try ModelDirectory(fixtures.appendingPathComponent(fixture))
    let transports = InProcessTransport.connected(worldSize: worldSize)
    for rank in 1..<worldSize {
        let transport = transports[rank]
        Thread.detachNewThread {
            let done = DispatchSemaphore(value: 0)
            Task {
                try? await PipelineRuntime.serve(transport: transport, directory: directory, options: PipelineOptions(),
                                                 maxQueued: maxQueued) { _ in }
                done.signal()
            }
            done.wait()
        }
    }
    try await PipelineRuntime.serve(transport: transports[0], directory: directory, options: PipelineOptions(),
                                    maxQueued: maxQueued) { engine in
        while !engine.status.ready { try await Task.sleep(for: .milliseconds(10)) }
        try await body(engine)
        await engine.shutdown(grace: .seconds(10))
    }
}

@Test(arguments: [1, 3])
func engineServesConcurrentRequestsLikeABatch(worldSize: Int) async throws {
    let (_, reqs, cases) = try requests("interval2_qknorm")
    try await withEngine(worldSize: worldSize, fixture: "interval2_qknorm") { engine in
        try await withThrowingTaskGroup(of: (Int, [Int], GenerationEvent?).self) { group in
            for (i, request) in reqs.enumerated() {
                group.addTask {
                    var tokens: [Int] = []
                    var last: GenerationEvent?
                    for try await event in try engine.submit(request) {
                        if case .token(let t) = event { tokens.append(t) } else { last = event }
                    }
                    return (i, tokens, last)
                }
            }
            for try await (i, tokens, last) in group {
                #expect(tokens == cases[i].greedy_tokens, "request \(i)")
                #expect(last == .finished(.length, promptTokens: cases[i].input_ids.count, completionTokens: tokens.count))
            }
        }
        // Status is published by the engine thread just after it streams the last event.
        for _ in 0..<200 where engine.status.active > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(engine.status.active == 0 && engine.status.queued == 0)
    }
}

@Test func engineCancelsWhenTheClientStopsListening() async throws {
    let (_, reqs, _) = try requests("interval1", maxTokens: 150)
    var long = reqs[0]
    long.stopTokens = []
    let request = long
    try await withEngine(worldSize: 2, fixture: "interval1") { engine in
        let task = Task {
            var count = 0
            for try await event in try engine.submit(request) {
                if case .token = event { count += 1 }
                if count == 3 { break }  // the client goes away
            }
            return count
        }
        #expect(try await task.value == 3)
        // The sequence leaves the pipeline.
        for _ in 0..<200 where engine.status.active > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(engine.status.active == 0)
    }
}

@Test func engineRefusesWhenTheQueueIsFull() async throws {
    let (_, reqs, _) = try requests("interval1", maxTokens: 100)
    try await withEngine(worldSize: 1, fixture: "interval1", maxQueued: 1) { engine in
        var streams: [AsyncThrowingStream<GenerationEvent, Error>] = []
        var refused = 0
        for _ in 0..<20 {
            do { streams.append(try engine.submit(reqs[0])) } catch EngineError.queueFull { refused += 1 }
        }
        #expect(refused > 0)
        for s in streams { for try await _ in s {} }
    }
}

/// Rank 0 sends its PLAN after the HELLOs; a rank that planned differently (started with other
/// layout options) answers ERROR, and the run fails naming it, instead of running other layers.
@Test func aRankWithAnotherPlanIsRefused() throws {
    let (directory, reqs, _) = try requests("interval2_qknorm")
    let transports = InProcessTransport.connected(worldSize: 3)
    let group = DispatchGroup()
    for rank in 1..<3 {
        let transport = transports[rank]
        let options = { var o = PipelineOptions(); o.visionOwnRank = rank == 2; return o }()  // rank 2 alone plans a vision rank of its own
        group.enter()
        Thread.detachNewThread {
            _ = try? PipelineRuntime.run(transport: transport, directory: directory, options: options) { [] }
            group.leave()
        }
    }
    do {
        _ = try PipelineRuntime.run(transport: transports[0], directory: directory, options: PipelineOptions()) { reqs }
        Issue.record("the run went ahead with ranks on different plans")
    } catch let PipelineError.stageFailed(rank, message) {
        #expect(rank == 2)
        #expect(message.contains("plan"), "\(message)")
    }
    group.wait()
}
