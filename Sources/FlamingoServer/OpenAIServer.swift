import FlamingoCore
import FlamingoCluster
import FlamingoModel
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle

/// The OpenAI-compatible HTTP API in front of a `GenerationEngine` (Hummingbird 2):
///
///     POST /v1/chat/completions    chat with text and images, streamed (SSE) or not
///     GET  /v1/models              the one served model
///     GET  /v1/models/{id}
///     GET  /health                 200 when the engine is ready, else 503
///     GET  /metrics                Prometheus text
///
/// With an API key every /v1 path needs `Authorization: Bearer <key>`. Errors are OpenAI's error
/// JSON. The server maps requests to `GenerationRequest`s and talks only to the engine.
public final class OpenAIServer: Sendable {
    public let engine: any GenerationEngine
    public let configuration: ServerConfiguration
    public let metrics: ServerMetrics
    /// The model id clients name (`model`): --served-model-name, else the model directory's name.
    public let modelID: String
    let builder: ChatRequestBuilder
    let deadlines = RequestDeadlines()
    public let logger: Logger
    let started = Int(Date().timeIntervalSince1970)

    /// - Throws: when the model cannot be served (it has no tokenizer.json, or its chat template
    ///   does not load).
    public init(engine: any GenerationEngine, configuration: ServerConfiguration, metrics: ServerMetrics = ServerMetrics(),
                logger: Logger = Logger(label: "flamingo.server")) throws {
        self.engine = engine
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        modelID = configuration.servedModelName ?? engine.directory.url.standardizedFileURL.lastPathComponent
        builder = try ChatRequestBuilder(directory: engine.directory, limits: configuration.limits,
                                         allowLocalFiles: configuration.allowLocalFiles,
                                         chatTemplate: configuration.chatTemplate)
    }

    // MARK: - Running

    /// Serves until SIGTERM, SIGINT or SIGUSR1 (which mpirun forwards to the ranks), then shuts down gracefully: stops accepting connections, lets
    /// requests in flight finish within `shutdownGrace` (`engine.shutdown(grace:)`), and returns.
    /// - Parameter onListening: called with the bound port once the server accepts connections.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        var group = ServiceGroupConfiguration(services: [service(onListening: onListening)],
                                              gracefulShutdownSignals: [.sigterm, .sigint, .sigusr1], logger: logger)
        // A client that neither reads nor closes must not keep the process alive forever.
        group.maximumGracefulShutdownDuration = configuration.shutdownGrace + .seconds(10)
        try await ServiceGroup(configuration: group).run()
    }

    /// The server as a `Service`, for callers that run their own `ServiceGroup` (and trigger its
    /// graceful shutdown themselves, as tests do).
    public func service(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> some Service {
        Serving(server: self, onListening: onListening)
    }

    private struct Serving: Service {
        let server: OpenAIServer
        let onListening: @Sendable (Int) async -> Void

        func run() async throws {
            let configuration = server.configuration
            let port = configuration.port
            let onListening = self.onListening
            let app = httpApplication(router: server.router(), configuration: configuration, logger: server.logger,
                                      onListening: onListening)
            let engine = server.engine
            let watcher = Task { await server.deadlines.run() }
            defer { watcher.cancel() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Both see the graceful shutdown at once: the HTTP server stops accepting and waits
                // for its requests while the engine lets them finish (or ends them after the grace).
                group.addTask { try await app.run() }
                group.addTask {
                    do {
                        try await gracefulShutdown()
                    } catch {
                        return  // cancelled: not a graceful shutdown
                    }
                    server.logger.info("shutting down: finishing requests in flight (grace \(configuration.shutdownGrace))")
                    await engine.shutdown(grace: configuration.shutdownGrace)
                }
                try await group.waitForAll()
            }
        }
    }

    // MARK: - Routes

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorMiddleware(metrics: metrics))
        if let key = configuration.apiKey, !key.isEmpty {
            router.add(middleware: BearerAuthMiddleware(apiKey: key))
        }
        router.post("/v1/chat/completions") { request, _ in try await self.chatCompletions(request) }
        router.get("/v1/models") { _, _ in
            jsonResponse(modelList(id: self.modelID, created: self.started))
        }
        router.get("/v1/models/{id}") { request, context in
            let id = context.parameters.get("id") ?? ""
            guard id == self.modelID else { throw APIError.unknownModel(id, served: self.modelID) }
            return jsonResponse(.object([("id", .string(id)), ("object", "model"), ("created", JSON(self.started)),
                                         ("owned_by", "flamingo")]))
        }
        router.get("/health") { _, _ in
            let status = self.engine.status
            return jsonResponse(.object([("status", status.ready ? "ok" : "unavailable"), ("model", .string(self.modelID)),
                                         ("queued", JSON(status.queued)), ("active", JSON(status.active))]),
                                status: status.ready ? .ok : .serviceUnavailable)
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: self.metrics.exposition(engine: self.engine.status))))
        }
        return router
    }

    // MARK: - Chat completions

    func chatCompletions(_ request: Request) async throws -> Response {
        let arrival = ContinuousClock.now
        metrics.requestStarted()
        // A streamed response ends later, in its body writer, which then does this.
        var streaming = false
        defer {
            if !streaming {
                metrics.requestEnded()
                metrics.recordRequestDuration(ContinuousClock.now - arrival)
            }
        }
        var request = request
        let body = try await collectBody(&request)
        let chat = try ChatCompletionRequest(body: Data(body.readableBytesView))
        if let name = chat.model, name != modelID { throw APIError.unknownModel(name, served: modelID) }
        let prepared = try builder.prepare(chat)
        let events = try engine.submit(prepared.generation)
        metrics.recordPromptTokens(prepared.promptTokenCount)
        let timeout = configuration.limits.requestTimeout
        let pump = EventPump(events, deadline: arrival + timeout, timeout: timeout, deadlines: deadlines)
        let format = ChatResponseFormat(model: modelID)
        let run = CompletionRun(pump: pump, text: CompletionText(tokenizer: builder.tokenizer, stop: prepared.stop),
                                metrics: metrics, arrival: arrival)
        if prepared.stream {
            streaming = true
            return streamResponse(request, run: run, prepared: prepared, format: format, arrival: arrival)
        }
        // The client going away cancels this task, and with it the sequence. Watching for that
        // consumes the connection (Hummingbird closes it after the response): hence `Connection: close`,
        // so that clients do not send their next request on it.
        let (text, reason, completionTokens) = try await request.body.consumeWithCancellationOnInboundClose { _ in
            var run = run
            let reason = try await run.run { _ in }
            return (run.text.released, reason, run.completionTokens)
        }
        logCompletion(format.id, prepared: prepared, completionTokens: completionTokens, reason: reason, arrival: arrival)
        return jsonResponse(format.completion(text: text, finishReason: reason, promptTokens: prepared.promptTokenCount,
                                              completionTokens: completionTokens), closing: true)
    }

    private func streamResponse(_ request: Request, run: CompletionRun, prepared: PreparedCompletion,
                                format: ChatResponseFormat, arrival: ContinuousClock.Instant) -> Response {
        let metrics = self.metrics
        let logger = self.logger
        let headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-cache",
                                   .connection: "close"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer {
                metrics.requestEnded()
                metrics.recordRequestDuration(ContinuousClock.now - arrival)
            }
            let usage = prepared.includeUsage
            do {
                try await request.body.consumeWithCancellationOnInboundClose { _ in
                    var run = run
                    try await writer.write(ByteBuffer(string: ServerSentEvents.event(format.roleChunk(includeUsage: usage))))
                    do {
                        let reason = try await run.run { piece in
                            try await writer.write(ByteBuffer(string: ServerSentEvents.event(
                                format.contentChunk(piece, includeUsage: usage))))
                        }
                        var tail = ServerSentEvents.event(format.finishChunk(reason, includeUsage: usage))
                        if usage {
                            tail += ServerSentEvents.event(format.usageChunk(promptTokens: prepared.promptTokenCount,
                                                                             completionTokens: run.completionTokens))
                        }
                        tail += ServerSentEvents.done
                        try await writer.write(ByteBuffer(string: tail))
                        self.logCompletion(format.id, prepared: prepared, completionTokens: run.completionTokens, reason: reason,
                                           arrival: arrival)
                    } catch where !(error is CancellationError) && !Task.isCancelled {
                        // Headers are gone: the error travels as an event, as OpenAI's do.
                        let apiError = APIError.from(error)
                        logger.info("stream ended by error: \(apiError.message)")
                        try await writer.write(ByteBuffer(string: ServerSentEvents.event(apiError.json)))
                    }
                }
            } catch {
                // The client went away: the sequence was cancelled; nothing more to write.
                logger.debug("stream closed by the client")
                return
            }
            try await writer.finish(nil)
        })
    }

    /// One line per answered request (at info level: LOG_LEVEL=info).
    private func logCompletion(_ id: String, prepared: PreparedCompletion, completionTokens: Int, reason: FinishReason,
                               arrival: ContinuousClock.Instant) {
        logger.info("completion", metadata: [
            "id": "\(id)", "stream": "\(prepared.stream)", "images": "\(prepared.generation.images.count)",
            "prompt_tokens": "\(prepared.promptTokenCount)", "completion_tokens": "\(completionTokens)",
            "finish_reason": "\(reason.rawValue)", "seconds": "\((ContinuousClock.now - arrival).seconds)",
        ])
    }

    /// The whole body, within the size limit (413 past it).
    private func collectBody(_ request: inout Request) async throws -> ByteBuffer {
        let limit = configuration.limits.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw APIError.bodyTooLarge(limit: limit)
        }
        do {
            return try await request.collectBody(upTo: limit)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError.bodyTooLarge(limit: limit)
        }
    }
}

/// - Parameter closing: say `Connection: close` (the connection cannot take another request).
func jsonResponse(_ json: JSON, status: HTTPResponse.Status = .ok, closing: Bool = false) -> Response {
    let headers: HTTPFields = closing ? [.contentType: "application/json", .connection: "close"]
                                      : [.contentType: "application/json"]
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: json.serializedString)))
}

// MARK: - Middleware

/// Turns every failure into OpenAI's error JSON with its status, and counts requests by status.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = Self.label(request.uri.path)
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            if error is CancellationError || Task.isCancelled {
                metrics.recordRequest(path: path, status: 499)
                throw error
            }
            let apiError: APIError
            switch error {
            case let error as HTTPError where error.status == .notFound:
                apiError = .notFound(request.uri.path)
            case let error as any HTTPResponseError:
                apiError = APIError(status: error.status, message: error.status.reasonPhrase,
                                    type: error.status.code >= 500 ? "server_error" : "invalid_request_error")
            default:
                apiError = APIError.from(error)
            }
            response = jsonResponse(apiError.json, status: apiError.status)
        }
        metrics.recordRequest(path: path, status: response.status.code)
        return response
    }

    /// Known paths, else "other" (bounded label values).
    static func label(_ path: String) -> String {
        switch path {
        case "/v1/chat/completions", "/v1/models", "/health", "/metrics": path
        case _ where path.hasPrefix("/v1/models/"): "/v1/models/{id}"
        default: "other"
        }
    }
}

/// `Authorization: Bearer <key>` on every /v1 path.
struct BearerAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1") else { return try await next(request, context) }
        guard let header = request.headers[.authorization] else { throw APIError.missingAPIKey }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw APIError.missingAPIKey }
        guard Self.constantTimeEqual(Array(parts[1].utf8), Array(apiKey.utf8)) else { throw APIError.wrongAPIKey }
        return try await next(request, context)
    }

    /// Compares without an early exit, so that timing does not reveal how much of a guess is right.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0
    }
}
