import FlamingoCore
import FlamingoModel
import Foundation

/// What a request produces, in order: tokens as they are sampled, then exactly one `finished`.
public enum GenerationEvent: Sendable, Equatable {
    case token(Int)
    case finished(FinishReason, promptTokens: Int, completionTokens: Int)
}

/// Why the engine refused a request (maps to HTTP statuses in the server).
public enum EngineError: Error, LocalizedError, Equatable {
    /// Too many requests waiting (HTTP 429).
    case queueFull(limit: Int)
    /// The engine is starting or shutting down (HTTP 503).
    case unavailable(String)
    /// The pipeline failed (a rank died); the process is about to exit (HTTP 500).
    case failed(String)

    public var errorDescription: String? {
        switch self {
        case .queueFull(let limit): "the server is busy: \(limit) requests are already waiting"
        case .unavailable(let why): "the model is not available: \(why)"
        case .failed(let why): "generation failed: \(why)"
        }
    }
}

/// A snapshot of the engine for /health and /metrics.
public struct EngineStatus: Sendable {
    public var ready: Bool
    /// Requests accepted but not yet admitted into a microbatch.
    public var queued: Int
    /// Sequences being generated.
    public var active: Int
    /// Seconds each stage rank has spent computing, by rank (from the last statistics).
    public var stageBusySeconds: [Int: Double]
    public init(ready: Bool, queued: Int, active: Int, stageBusySeconds: [Int: Double] = [:]) {
        self.ready = ready
        self.queued = queued
        self.active = active
        self.stageBusySeconds = stageBusySeconds
    }
}

/// Generates for many concurrent clients: the server talks to this, never to ranks or the model.
/// Requests share the pipeline (continuous batching across microbatches).
public protocol GenerationEngine: Sendable {
    /// The model's files: tokenizer, image preprocessing, config (to build requests).
    var directory: ModelDirectory { get }
    var status: EngineStatus { get }
    /// Admits a request: validates it against the model (throws `RequestError`: the one place a
    /// request is checked) and starts generating. The stream yields tokens, then `.finished`. When the consumer stops
    /// listening (the stream is terminated or its task cancelled), the sequence is cancelled and
    /// its caches freed on every rank. Throws `EngineError.queueFull` when the queue is full.
    func submit(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error>
    /// Stops accepting requests, lets the ones in flight finish (at most `grace`), then stops the
    /// pipeline on every rank.
    func shutdown(grace: Duration) async
}
