import FlamingoCore
import FlamingoCluster
import FlamingoModel
import FlamingoServer
import Foundation
import ServiceLifecycle
import Testing

// The HTTP layer over real loopback sockets, against a scripted engine (and the fixture model
// through LocalEngine): responses, SSE framing, errors, auth, limits, metrics, cancellation.

private let answer = "The quick brown fox. It jumps over the lazy dog."

private func expectedText(_ engine: ScriptedEngine, _ tokens: [Int]? = nil) -> String {
    engine.directory.tokenizer!.decode(tokens ?? engine.tokens, skipSpecialTokens: true)
}

private func expectError(_ r: TestClient.Response, status: Int, code: String?, param: String? = nil,
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(r.status == status, "\(r.text)", sourceLocation: sourceLocation)
    #expect(r.headers["content-type"] == "application/json", sourceLocation: sourceLocation)
    let error = try #require(try r.json()["error"], "\(r.text)", sourceLocation: sourceLocation)
    #expect(error["code"] == JSON(code), "\(r.text)", sourceLocation: sourceLocation)
    #expect(error["param"] == JSON(param), "\(r.text)", sourceLocation: sourceLocation)
    if case .string(let message)? = error["message"] {
        #expect(!message.isEmpty, sourceLocation: sourceLocation)
    } else {
        Issue.record("no message in \(r.text)", sourceLocation: sourceLocation)
    }
    #expect(error["type"] != nil, sourceLocation: sourceLocation)
}

@Test func nonStreamingCompletion() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine) { server, client in
        let r = try await client.post("/v1/chat/completions", json: chatBody("Hello", model: server.modelID))
        #expect(r.status == 200, "\(r.text)")
        #expect(r.headers["content-type"] == "application/json")
        let json = try r.json()
        #expect(json["object"] == "chat.completion")
        #expect(json["model"] == .string("interval1"))
        guard case .string(let id)? = json["id"] else { Issue.record("no id"); return }
        #expect(id.hasPrefix("chatcmpl-"))
        guard case .int(let created)? = json["created"] else { Issue.record("no created"); return }
        #expect(abs(Double(created) - Date().timeIntervalSince1970) < 60)
        guard case .array(let choices)? = json["choices"], choices.count == 1 else { Issue.record("choices"); return }
        #expect(choices[0]["index"] == 0)
        #expect(choices[0]["message"]?["role"] == "assistant")
        #expect(choices[0]["message"]?["content"] == .string(expectedText(engine)))
        #expect(choices[0]["finish_reason"] == "length")
        let prompt = engine.log.withLock { $0.submitted[0].promptTokens.count }
        #expect(json["usage"] == .object([("prompt_tokens", JSON(prompt)), ("completion_tokens", JSON(engine.tokens.count)),
                                          ("total_tokens", JSON(prompt + engine.tokens.count))]))
    }
}

@Test func requestReachesTheEngineAsTheTemplatedPrompt() async throws {
    let engine = try ScriptedEngine(text: answer)
    let directory = engine.directory
    try await withServer(engine) { _, client in
        let body = """
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "Compare"},
                          {"type": "image_url", "image_url": {"url": "\(try Fixtures.dataURL("circle.png"))"}},
                          {"type": "image_url", "image_url": {"url": "\(try Fixtures.dataURL("mountain.jpg"))"}}]}],
         "max_tokens": 3, "temperature": 0.7, "top_p": 0.9, "seed": 5}
        """
        let r = try await client.post("/v1/chat/completions", json: body)
        #expect(r.status == 200, "\(r.text)")
        let request = try #require(engine.log.withLock { $0.submitted.first })
        let builder = PromptBuilder(tokenizer: directory.tokenizer!)
        #expect(request.promptTokens == builder.tokens("Be brief.\nUser: Compare<image><image>\nAssistant:"))
        #expect(request.images.count == 2)
        let circle = directory.preprocessor(try RGBImage(decoding: Fixtures.imageData("circle.png")))
        #expect(request.images[0].scalars == circle.scalars)
        #expect(request.maxTokens == 3)
        #expect(request.sampling == .sample(temperature: 0.7, topP: 0.9, seed: 5))
        #expect(request.stopTokens == Set(directory.config.language.eosTokenIDs))
        #expect(try r.json()["choices"].map { _ in true } == true)
    }
}

@Test func defaultsAreOpenAIsAndGreedyAtTemperatureZero() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine, configure: { $0.limits.maxCompletionTokens = 50 }) { _, client in
        _ = try await client.post("/v1/chat/completions", json: chatBody())
        _ = try await client.post("/v1/chat/completions", json: chatBody(extra: #""temperature": 0"#))
        let requests = engine.log.withLock { $0.submitted }
        #expect(requests.count == 2)
        if case .sample(let t, let p, _) = requests[0].sampling { #expect(t == 1 && p == 1) } else { Issue.record("default should sample at T=1") }
        #expect(requests[0].maxTokens == 50)
        #expect(requests[1].sampling == .greedy)
    }
}

@Test func streamingIsFramedAsOpenAIs() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine) { _, client in
        let r = try await client.post("/v1/chat/completions", json: chatBody(extra: #""stream": true"#))
        #expect(r.status == 200)
        #expect(r.headers["content-type"]?.hasPrefix("text/event-stream") == true)
        #expect(r.text.hasSuffix("\n\ndata: [DONE]\n\n"))
        let events = r.events
        #expect(events.last == "[DONE]")
        let chunks = try events.dropLast().map { try JSON.parse(Data($0.utf8)) }
        #expect(chunks.count >= 4)
        let ids = Set(chunks.compactMap { $0["id"]?.serializedString })
        #expect(ids.count == 1)
        for chunk in chunks {
            #expect(chunk["object"] == "chat.completion.chunk")
            #expect(chunk["usage"] == nil)
        }
        #expect(chunks.first?["choices"] == [.object([("index", 0), ("delta", .object([("role", "assistant"), ("content", ""), ("refusal", nil)])),
                                                       ("logprobs", nil), ("finish_reason", nil)])])
        #expect(chunks.last?["choices"] == [.object([("index", 0), ("delta", .object([])), ("logprobs", nil), ("finish_reason", "length")])])
        var text = ""
        for chunk in chunks.dropFirst().dropLast() {
            guard case .array(let choices)? = chunk["choices"], case .string(let piece)? = choices.first?["delta"]?["content"] else {
                Issue.record("bad content chunk \(chunk.serializedString)")
                continue
            }
            #expect(choices.first?["finish_reason"] == .null)
            text += piece
        }
        #expect(text == expectedText(engine))
    }
}

@Test func streamingUsageChunk() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine) { _, client in
        let r = try await client.post("/v1/chat/completions",
                                      json: chatBody(extra: #""stream": true, "stream_options": {"include_usage": true}, "max_tokens": 4"#))
        let events = r.events
        #expect(events.last == "[DONE]")
        let chunks = try events.dropLast().map { try JSON.parse(Data($0.utf8)) }
        for chunk in chunks.dropLast() { #expect(chunk["usage"] == .null) }
        let usage = try #require(chunks.last)
        #expect(usage["choices"] == [])
        #expect(usage["usage"]?["completion_tokens"] == 4)
        #expect(chunks.dropLast().last?["choices"]?.serializedString.contains(#""finish_reason":"length""#) == true)
    }
}

@Test func stopSequencesEndWithStop() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine) { _, client in
        let full = expectedText(engine)
        let cut = String(full[..<full.range(of: "jumps")!.lowerBound])
        let r = try await client.post("/v1/chat/completions", json: chatBody(extra: #""stop": ["jumps", "nothing"]"#))
        let choice = try r.json()["choices"].flatMap { if case .array(let c) = $0 { c.first } else { nil } }
        #expect(choice?["message"]?["content"] == .string(cut))
        #expect(choice?["finish_reason"] == "stop")
        let completion = try r.json()["usage"]?["completion_tokens"]
        if case .int(let n)? = completion { #expect(n < engine.tokens.count) } else { Issue.record("usage") }

        let s = try await client.post("/v1/chat/completions", json: chatBody(extra: #""stop": "jumps", "stream": true"#))
        let chunks = try s.events.dropLast().map { try JSON.parse(Data($0.utf8)) }
        var text = ""
        for chunk in chunks {
            if case .array(let c)? = chunk["choices"], case .string(let piece)? = c.first?["delta"]?["content"] { text += piece }
        }
        #expect(text == cut)
        #expect(chunks.last?["choices"]?.serializedString.contains(#""finish_reason":"stop""#) == true)
        // The engine saw the sequence cancelled once the stop sequence appeared.
        try await waitUntil { engine.log.withLock { $0.cancelled } == 2 }
    }
}

@Test func finishReasonStopFromTheEngine() async throws {
    let engine = try ScriptedEngine(text: "short", finishReason: .stop)
    try await withServer(engine) { _, client in
        let r = try await client.post("/v1/chat/completions", json: chatBody())
        #expect(try r.json()["choices"]?.serializedString.contains(#""finish_reason":"stop""#) == true)
    }
}

@Test func errorsComeAsOpenAIErrorJSON() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine, configure: {
        $0.limits.maxBodyBytes = 200_000
        $0.limits.maxImagesPerRequest = 2
        $0.limits.maxCompletionTokens = 20
    }) { _, client in
        let path = "/v1/chat/completions"
        try expectError(try await client.post(path, json: "{oops"), status: 400, code: "invalid_json")
        try expectError(try await client.post(path, json: #"{"model": "interval1"}"#), status: 400,
                        code: "missing_required_parameter", param: "messages")
        try expectError(try await client.post(path, json: #"{"messages": [{"role": "user", "content": 1}]}"#), status: 400,
                        code: "invalid_type", param: "messages[0].content")
        try expectError(try await client.post(path, json: chatBody(model: "gpt-4o")), status: 404, code: "model_not_found",
                        param: "model")
        try expectError(try await client.post(path, json: chatBody(extra: #""max_tokens": 21"#)), status: 400,
                        code: "invalid_value", param: "max_tokens")
        let image = { (url: String) in #"{"type": "image_url", "image_url": {"url": "\#(url)"}}"# }
        func imageBody(_ parts: [String]) -> String {
            #"{"messages": [{"role": "user", "content": [\#(parts.joined(separator: ","))]}]}"#
        }
        let circle = try Fixtures.dataURL("circle.png")
        try expectError(try await client.post(path, json: imageBody([image(circle), image(circle), image(circle)])),
                        status: 400, code: "too_many_images", param: "messages")
        try expectError(try await client.post(path, json: imageBody([image("data:image/png;base64,%%%")])), status: 400,
                        code: "invalid_base64", param: "messages[0].content[0].image_url.url")
        try expectError(try await client.post(path, json: imageBody([image("data:image/png;base64," + Data("plain text".utf8).base64EncodedString())])),
                        status: 400, code: "invalid_image", param: "messages[0].content[0].image_url.url")
        try expectError(try await client.post(path, json: imageBody([image("file:///etc/passwd")])), status: 400,
                        code: "invalid_image_url", param: "messages[0].content[0].image_url.url")
        let big = String(repeating: "x", count: 300_000)
        try expectError(try await client.post(path, json: chatBody(big)), status: 413, code: "request_too_large")
        try expectError(try await client.get("/v1/nothing"), status: 404, code: "not_found")
        try expectError(try await client.get("/v1/models/other"), status: 404, code: "model_not_found", param: "model")
        // The prompt alone over the context.
        try expectError(try await client.post(path, json: chatBody(String(repeating: "word ", count: 400))), status: 400,
                        code: "context_length_exceeded", param: "messages")
        #expect(engine.log.withLock { $0.submitted.isEmpty }, "no refused request reaches the engine")
    }
}

@Test func queueFullIs429AndUnavailableIs503() async throws {
    let engine = try ScriptedEngine(text: "a b", delay: .milliseconds(200), queueLimit: 1)
    try await withServer(engine) { _, client in
        async let slow = client.post("/v1/chat/completions", json: chatBody())
        try await waitUntil { engine.log.withLock { $0.active } == 1 }
        try expectError(try await client.post("/v1/chat/completions", json: chatBody()), status: 429, code: "queue_full")
        #expect(try await slow.status == 200)
        engine.readyFlag.withLock { $0 = false }
        try expectError(try await client.post("/v1/chat/completions", json: chatBody()), status: 503, code: "model_unavailable")
    }
}

@Test func apiKeyIsRequiredOnV1Only() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine, configure: { $0.apiKey = "sekret" }) { _, client in
        try expectError(try await client.get("/v1/models"), status: 401, code: "missing_api_key")
        try expectError(try await client.get("/v1/models", headers: ["Authorization": "Bearer wrong"]), status: 401,
                        code: "invalid_api_key")
        try expectError(try await client.post("/v1/chat/completions", json: chatBody(), headers: ["Authorization": "Basic sekret"]),
                        status: 401, code: "missing_api_key")
        try expectError(try await client.post("/v1/chat/completions", json: chatBody()), status: 401, code: "missing_api_key")
        let ok = try await client.get("/v1/models", headers: ["Authorization": "Bearer sekret"])
        #expect(ok.status == 200)
        #expect(try ok.json()["data"]?.serializedString.contains(#""id":"interval1""#) == true)
        #expect(try await client.post("/v1/chat/completions", json: chatBody(), headers: ["Authorization": "Bearer sekret"]).status == 200)
        #expect(try await client.get("/health").status == 200)
        #expect(try await client.get("/metrics").status == 200)
    }
}

@Test func modelsHealthAndMetrics() async throws {
    let engine = try ScriptedEngine(text: answer)
    try await withServer(engine, configure: { $0.servedModelName = "flamingo-tiny" }) { _, client in
        let models = try await client.get("/v1/models").json()
        #expect(models["object"] == "list")
        #expect(models.serializedString.hasPrefix(#"{"object":"list","data":[{"id":"flamingo-tiny","object":"model","created":"#))
        #expect(try await client.get("/v1/models/flamingo-tiny").status == 200)
        #expect(try await client.post("/v1/chat/completions", json: chatBody(model: "flamingo-tiny")).status == 200)
        try expectError(try await client.post("/v1/chat/completions", json: chatBody(model: "interval1")), status: 404,
                        code: "model_not_found", param: "model")

        #expect(try await client.get("/health").status == 200)
        engine.readyFlag.withLock { $0 = false }
        let health = try await client.get("/health")
        #expect(health.status == 503)
        #expect(try health.json()["status"] == "unavailable")
        engine.readyFlag.withLock { $0 = true }

        let metrics = try await client.get("/metrics")
        #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
        let text = metrics.text
        for line in [
            #"flamingo_http_requests_total{path="/v1/chat/completions",status="200"} 1"#,
            #"flamingo_http_requests_total{path="/v1/chat/completions",status="404"} 1"#,
            #"flamingo_http_requests_total{path="/health",status="503"} 1"#,
            "flamingo_completion_tokens_total \(engine.tokens.count)",
            "flamingo_queue_depth 0.0",
            "flamingo_active_sequences 0.0",
            "flamingo_ready 1.0",
            #"flamingo_stage_busy_seconds_total{rank="1"} 0.5"#,
            "flamingo_time_to_first_token_seconds_count 1",
            "flamingo_time_per_output_token_seconds_count \(engine.tokens.count - 1)",
            "flamingo_http_requests_in_flight 0.0",
        ] {
            #expect(text.contains(line + "\n"), "missing '\(line)' in\n\(text)")
        }
        #expect(text.contains("flamingo_prompt_tokens_total "))
        #expect(text.contains("# TYPE flamingo_time_to_first_token_seconds histogram"))
    }
}

@Test func clientDisconnectCancelsTheSequence() async throws {
    let engine = try ScriptedEngine(text: String(repeating: answer + " ", count: 3), delay: .milliseconds(50))
    try await withServer(engine) { _, client in
        // Streaming: hang up after the first content chunk.
        let got = try await client.requestThenDisconnect("POST", "/v1/chat/completions", json: chatBody(extra: #""stream": true"#)) {
            $0.components(separatedBy: "\"content\"").count > 2
        }
        #expect(got.contains("chat.completion.chunk"))
        try await waitUntil { engine.log.withLock { $0.cancelled } == 1 }
        // Not streaming: hang up while it generates.
        _ = try await client.requestThenDisconnect("POST", "/v1/chat/completions", json: chatBody()) { _ in true }
        try await waitUntil { engine.log.withLock { $0.cancelled } == 2 }
        #expect(engine.log.withLock { $0.active } == 0)
    }
}

@Test func requestTimeLimit() async throws {
    let engine = try ScriptedEngine(text: answer, delay: .milliseconds(100))
    try await withServer(engine, configure: { $0.limits.requestTimeout = .milliseconds(300) }) { _, client in
        try expectError(try await client.post("/v1/chat/completions", json: chatBody()), status: 504, code: "timeout")
        let s = try await client.post("/v1/chat/completions", json: chatBody(extra: #""stream": true"#))
        #expect(s.status == 200)
        let last = try JSON.parse(Data(try #require(s.events.last).utf8))
        #expect(last["error"]?["code"] == "timeout", "\(s.text)")
        try await waitUntil { engine.log.withLock { $0.cancelled } == 2 }
    }
}

@Test func gracefulShutdownFinishesRequestsInFlightThenStopsAccepting() async throws {
    let engine = try ScriptedEngine(text: answer, delay: .milliseconds(30))
    let server = try OpenAIServer(engine: engine, configuration: {
        var c = ServerConfiguration()
        c.port = 0
        c.shutdownGrace = .seconds(5)
        return c
    }(), logger: quietLogger)
    let (ports, portContinuation) = AsyncStream<Int>.makeStream()
    let group = ServiceGroup(configuration: .init(services: [server.service { portContinuation.yield($0) }], logger: server.logger))
    async let running: Void = group.run()
    var iterator = ports.makeAsyncIterator()
    let client = TestClient(port: try #require(await iterator.next()))
    async let response = client.post("/v1/chat/completions", json: chatBody())
    try await waitUntil { engine.log.withLock { $0.active } == 1 }
    await group.triggerGracefulShutdown()
    let r = try await response
    #expect(r.status == 200, "the request in flight finishes: \(r.text)")
    try await running
    #expect(engine.log.withLock { $0.shutdownCalled })
    await #expect(throws: (any Error).self, "no longer accepting") { try await client.get("/health") }
}

/// Polls `condition` for up to 30 s (generous: other test targets may load both cores meanwhile).
func waitUntil(_ condition: @Sendable () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("condition not met within 30 s", sourceLocation: sourceLocation)
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

// MARK: - The fixture model through the pipeline engine (one process)

@Test func pipelineEngineGreedyAnswerEqualsTheGenerator() async throws {
    let directory = try Fixtures.directory()
    let body = """
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "\(try Fixtures.dataURL("circle.png"))"}},
                                               {"type": "text", "text": "A photo of"}]}],
     "max_tokens": 8, "temperature": 0}
    """
    let results = Locked<[TestClient.Response]>([])
    // The server's graceful shutdown shuts the engine down, which ends `serve`.
    try await PipelineRuntime.serve(transport: InProcessTransport(), directory: directory, options: PipelineOptions(),
                                    maxQueued: 8) { engine in
        try await waitUntil { engine.status.ready }
        try await withServer(engine) { _, client in
            let plain = try await client.post("/v1/chat/completions", json: body)
            let streamed = try await client.post("/v1/chat/completions", json: body.replacingOccurrences(
                of: "\"temperature\": 0", with: "\"temperature\": 0, \"stream\": true"))
            results.withLock { $0 = [plain, streamed] }
        }
    }
    let (plain, streamed) = try #require(results.withLock { $0.count == 2 ? ($0[0], $0[1]) : nil })
    #expect(plain.status == 200, "\(plain.text)")

    let generator = Generator(model: try directory.loadModel(), imageTokenID: directory.imageTokenID)
    let tokens = PromptBuilder(tokenizer: directory.tokenizer!).tokens("User: <image>A photo of\nAssistant:")
    let image = directory.preprocessor(try RGBImage(decoding: Fixtures.imageData("circle.png")))
    let expected = try generator.generate(GenerationRequest(promptTokens: tokens, images: [image], maxTokens: 8,
                                                            sampling: .greedy, stopTokens: Set(directory.config.language.eosTokenIDs)))
    let expectedText = directory.tokenizer!.decode(expected.tokens, skipSpecialTokens: true)
    let json = try plain.json()
    let choice = json["choices"].flatMap { if case .array(let c) = $0 { c.first } else { nil } }
    #expect(choice?["message"]?["content"] == .string(expectedText))
    #expect(choice?["finish_reason"] == .string(expected.finishReason.rawValue))
    #expect(json["usage"]?["completion_tokens"] == JSON(expected.tokens.count))
    #expect(json["usage"]?["prompt_tokens"] == JSON(tokens.count))

    var text = ""
    for event in streamed.events.dropLast() {
        let chunk = try JSON.parse(Data(event.utf8))
        if case .array(let c)? = chunk["choices"], case .string(let piece)? = c.first?["delta"]?["content"] { text += piece }
    }
    #expect(text == expectedText)
}
