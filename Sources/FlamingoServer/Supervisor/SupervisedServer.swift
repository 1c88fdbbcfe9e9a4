import FlamingoCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// The HTTP API of `flamingo serve --supervise`: it answers /health and /metrics itself and passes
/// every other request to the pipeline's own server on rank 0 (`UpstreamClient`), so the API is
/// the one `OpenAIServer` serves. While the pipeline is down or restarting, /health says 503 with
/// the reason, and a request waits for it up to its deadline (`requestTimeout`; at most `maxWaiting`
/// wait at once) and then gets 503 with Retry-After. A request whose pipeline dies under it gets
/// 503, or, when its stream has begun, an `error` event and the end of the stream: never a hang.
public final class SupervisedServer: Sendable {
    public let supervisor: PipelineSupervisor
    public let configuration: ServerConfiguration
    public let modelID: String
    /// Most requests waiting for the pipeline at once; more get 503 at once.
    public let maxWaiting: Int
    let logger: Logger
    let registry = PrometheusCollectorRegistry()
    private let waiting = Locked(0)
    private let restarts: Counter
    private let restartsCounted = Locked(0)
    private let up: Gauge
    private let waitingGauge: Gauge

    public init(supervisor: PipelineSupervisor, configuration: ServerConfiguration, modelID: String, maxWaiting: Int,
                logger: Logger) {
        self.supervisor = supervisor
        self.maxWaiting = maxWaiting
        self.configuration = configuration
        self.modelID = modelID
        self.logger = logger
        restarts = registry.makeCounter(descriptor: MetricNameDescriptor(
            namespace: "flamingo", metricName: "pipeline_restarts", unitName: "total",
            helpText: "Times the supervisor launched the pipeline again after it went down."))
        up = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "flamingo", metricName: "pipeline_up", unitName: "",
            helpText: "1 while the supervised pipeline serves, else 0."))
        waitingGauge = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "flamingo", metricName: "supervisor_waiting_requests", unitName: "",
            helpText: "Requests waiting for the pipeline to come back."))
    }

    /// Serves until SIGTERM or SIGINT: then stops accepting, lets requests in flight finish (at most
    /// `shutdownGrace`), stops the pipeline gracefully and returns.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = httpApplication(router: router(), configuration: configuration, logger: logger, onListening: onListening)
        // Shut down in reverse order: the HTTP server first (requests in flight finish on a
        // pipeline still running), then the pipeline.
        var group = ServiceGroupConfiguration(services: [.init(service: supervisor), .init(service: app)],
                                              gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = configuration.shutdownGrace + supervisor.options.stopTimeout + .seconds(10)
        try await ServiceGroup(configuration: group).run()
    }

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        if let key = configuration.apiKey, !key.isEmpty {
            router.add(middleware: BearerAuthMiddleware(apiKey: key))
        }
        router.get("/health") { _, _ in try await self.health() }
        router.get("/metrics") { _, _ in await self.metrics() }
        router.on("/**", method: .get) { request, _ in try await self.forward(request) }
        router.on("/**", method: .post) { request, _ in try await self.forward(request) }
        return router
    }

    private func health() async throws -> Response {
        let snapshot = supervisor.snapshot
        if let (host, port) = supervisor.upstream,
           let upstream = try? await UpstreamClient(host: host, port: port)
            .send(method: "GET", uri: "/health", headers: [], body: nil, timeout: .seconds(2)),
           let body = try? await upstream.collect(upTo: 1 << 16),
           case .object(var fields)? = try? JSON.parse(Data(body.readableBytesView)) {
            fields.append(("restarts", JSON(snapshot.restarts)))
            return jsonResponse(.object(fields), status: .init(code: upstream.status))
        }
        let reason = supervisor.unavailableReason ?? "the pipeline's rank 0 does not answer"
        var fields: [(String, JSON)] = [("status", "unavailable"), ("model", .string(modelID)), ("reason", .string(reason)),
                                        ("restarts", JSON(snapshot.restarts))]
        if let last = snapshot.lastFailure { fields.append(("last_failure", .string(last))) }
        var response = jsonResponse(.object(fields), status: .serviceUnavailable)
        response.headers[.retryAfter] = "1"
        return response
    }

    private func metrics() async -> Response {
        let snapshot = supervisor.snapshot
        restartsCounted.withLock { counted in
            if snapshot.restarts > counted { restarts.increment(by: Int64(snapshot.restarts - counted)) }
            counted = max(counted, snapshot.restarts)
        }
        up.set(to: supervisor.upstream == nil ? 0 : 1)
        waitingGauge.set(to: Double(waiting.withLock { $0 }))
        var text = registry.emitToString()
        if let (host, port) = supervisor.upstream,
           let upstream = try? await UpstreamClient(host: host, port: port)
            .send(method: "GET", uri: "/metrics", headers: [], body: nil, timeout: .seconds(2)),
           upstream.status == 200, let body = try? await upstream.collect(upTo: 8 << 20) {
            text += String(decoding: body.readableBytesView, as: UTF8.self)
        }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Waits for the pipeline up to `deadline`; nil when it did not come back in time.
    private func awaitUpstream(until deadline: ContinuousClock.Instant) async throws -> (host: String, port: Int)? {
        if let up = supervisor.upstream { return up }
        let admitted = waiting.withLock { n -> Bool in
            guard n < maxWaiting else { return false }
            n += 1
            return true
        }
        guard admitted else { return nil }
        defer { waiting.withLock { $0 -= 1 } }
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            if supervisor.snapshot.phase == .stopped { return nil }
            if let up = supervisor.upstream { return up }
        }
        return nil
    }

    private func unavailable(_ why: String) -> Response {
        let error = APIError(status: .serviceUnavailable, message: why, type: "server_error", code: "model_unavailable")
        var response = jsonResponse(error.json, status: .serviceUnavailable)
        response.headers[.retryAfter] = "5"
        return response
    }

    private func forward(_ request: Request) async throws -> Response {
        let arrival = ContinuousClock.now
        let deadline = arrival + configuration.limits.requestTimeout
        var request = request
        let limit = configuration.limits.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            return jsonResponse(APIError.bodyTooLarge(limit: limit).json, status: .contentTooLarge, closing: true)
        }
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            return jsonResponse(APIError.bodyTooLarge(limit: limit).json, status: .contentTooLarge, closing: true)
        }
        guard let (host, port) = try await awaitUpstream(until: deadline) else {
            return unavailable(supervisor.unavailableReason ?? "the pipeline is not serving")
        }
        let headers = request.headers.map { ($0.name.rawName, $0.value) }
        let uri = request.uri.description
        let upstream: UpstreamClient.Response
        do {
            upstream = try await UpstreamClient(host: host, port: port)
                .send(method: request.method.rawValue, uri: uri, headers: headers, body: body,
                      timeout: max(deadline - ContinuousClock.now, .seconds(1)))
        } catch {
            return unavailable("the pipeline went down before answering: \(error.localizedDescription)")
        }
        var responseHeaders = HTTPFields()
        for (name, value) in upstream.headers where !UpstreamClient.hopByHop.contains(name.lowercased()) {
            if let field = HTTPField.Name(name) { responseHeaders.append(HTTPField(name: field, value: value)) }
        }
        let status = HTTPResponse.Status(code: upstream.status)
        let streaming = upstream.header("content-type")?.hasPrefix("text/event-stream") ?? false
        guard streaming else {
            do {
                let whole = try await upstream.collect(upTo: 64 << 20)
                return Response(status: status, headers: responseHeaders, body: .init(byteBuffer: whole))
            } catch {
                return unavailable("the pipeline went down while answering: \(error.localizedDescription)")
            }
        }
        responseHeaders[.connection] = "close"
        let logger = self.logger
        return Response(status: status, headers: responseHeaders, body: ResponseBody { writer in
            defer { upstream.close() }
            do {
                for try await piece in upstream.body { try await writer.write(piece) }
            } catch is CancellationError {
                return
            } catch let error as UpstreamError {
                // The stream began: the failure travels as an event, as the server's own do.
                logger.warning("stream cut by the pipeline going down: \(error.localizedDescription)")
                let apiError = APIError(status: .serviceUnavailable,
                                        message: "the pipeline went down mid-stream: \(error.localizedDescription)",
                                        type: "server_error", code: "model_unavailable")
                try? await writer.write(ByteBuffer(string: ServerSentEvents.event(apiError.json)))
            }
            try await writer.finish(nil)
        })
    }
}
