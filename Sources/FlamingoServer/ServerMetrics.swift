import FlamingoCluster
import Foundation
import Prometheus

/// The server's Prometheus metrics (`GET /metrics`), in a registry of its own (no global state).
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    private let promptTokens: Counter
    private let completionTokens: Counter
    private let timeToFirstToken: DurationHistogram
    private let timePerOutputToken: DurationHistogram
    private let requestDuration: DurationHistogram
    private let queueDepth: Gauge
    private let activeSequences: Gauge
    private let ready: Gauge
    private let inFlight: Gauge
    /// Last busy-seconds total seen per rank, to turn the engine's totals into counter increments.
    private let stageBusy = Locked<[Int: (counter: Counter, last: Double)]>([:])

    private static let latencyBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        .seconds(30), .seconds(60),
    ]
    private static let requestBuckets: [Duration] = [
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300),
        .seconds(600),
    ]

    /// "flamingo_<name>", the unit suffix as Prometheus wants it split off.
    private static func name(_ name: String, help: String) -> MetricNameDescriptor {
        for unit in ["total", "seconds"] where name.hasSuffix("_" + unit) {
            return MetricNameDescriptor(namespace: "flamingo", metricName: String(name.dropLast(unit.count + 1)),
                                        unitName: unit, helpText: help)
        }
        return MetricNameDescriptor(namespace: "flamingo", metricName: name, unitName: "", helpText: help)
    }

    public init() {
        promptTokens = registry.makeCounter(descriptor: Self.name(
            "prompt_tokens_total", help: "Prompt tokens of the requests admitted to the engine."))
        completionTokens = registry.makeCounter(descriptor: Self.name(
            "completion_tokens_total", help: "Tokens generated and delivered to clients."))
        timeToFirstToken = registry.makeDurationHistogram(descriptor: Self.name(
            "time_to_first_token_seconds", help: "From a request's arrival to its first generated token."),
            buckets: Self.latencyBuckets)
        timePerOutputToken = registry.makeDurationHistogram(descriptor: Self.name(
            "time_per_output_token_seconds", help: "Between consecutive generated tokens of a request."),
            buckets: Self.latencyBuckets)
        requestDuration = registry.makeDurationHistogram(descriptor: Self.name(
            "request_duration_seconds", help: "Chat completion requests, from arrival to the last byte."),
            buckets: Self.requestBuckets)
        queueDepth = registry.makeGauge(descriptor: Self.name(
            "queue_depth", help: "Requests accepted by the engine, waiting to join a microbatch."))
        activeSequences = registry.makeGauge(descriptor: Self.name("active_sequences", help: "Sequences being generated."))
        ready = registry.makeGauge(descriptor: Self.name(
            "ready", help: "1 when every rank has loaded and the engine accepts requests."))
        inFlight = registry.makeGauge(descriptor: Self.name(
            "http_requests_in_flight", help: "Chat completion requests being handled."))
    }

    /// Counts one finished HTTP request.
    public func recordRequest(path: String, status: Int) {
        registry.makeCounter(descriptor: Self.name("http_requests_total",
                                                   help: "HTTP requests by path and status (499: the client went away)."),
                             labels: [("path", path), ("status", String(status))]).increment()
    }

    func recordPromptTokens(_ n: Int) { promptTokens.increment(by: Int64(n)) }
    func recordCompletionTokens(_ n: Int) { completionTokens.increment(by: Int64(n)) }
    func recordTimeToFirstToken(_ d: Duration) { timeToFirstToken.record(d) }
    func recordTimePerOutputToken(_ d: Duration) { timePerOutputToken.record(d) }
    func recordRequestDuration(_ d: Duration) { requestDuration.record(d) }
    func requestStarted() { inFlight.increment() }
    func requestEnded() { inFlight.decrement() }

    /// Takes the engine's snapshot (called on every scrape).
    func update(from status: EngineStatus) {
        queueDepth.set(to: Double(status.queued))
        activeSequences.set(to: Double(status.active))
        ready.set(to: status.ready ? 1 : 0)
        stageBusy.withLock { busy in
            for (rank, seconds) in status.stageBusySeconds {
                let entry = busy[rank] ?? (registry.makeCounter(
                    descriptor: Self.name("stage_busy_seconds_total", help: "Seconds each stage rank has spent computing."),
                    labels: [("rank", String(rank))]), 0)
                if seconds > entry.last { entry.counter.increment(by: seconds - entry.last) }
                busy[rank] = (entry.counter, max(seconds, entry.last))
            }
        }
    }

    /// The Prometheus text exposition.
    public func exposition(engine status: EngineStatus) -> String {
        update(from: status)
        return registry.emitToString()
    }
}
