import FlamingoCluster
import FlamingoModel

/// One chat completion in flight: engine events in, released text out.
struct CompletionRun: Sendable {
    private let pump: EventPump
    private(set) var text: CompletionText
    private let metrics: ServerMetrics
    private let arrival: ContinuousClock.Instant

    /// Generated tokens consumed so far (the completion's `usage.completion_tokens`).
    private(set) var completionTokens = 0

    init(pump: EventPump, text: CompletionText, metrics: ServerMetrics, arrival: ContinuousClock.Instant) {
        self.pump = pump
        self.text = text
        self.metrics = metrics
        self.arrival = arrival
    }

    /// Runs to the end, calling `onText` with every piece of text as soon as it is final.
    /// A stop sequence cancels the sequence in the engine. Cancelling the calling task (the client
    /// went away) or running out of time cancels it too.
    /// - Returns: why generation ended.
    mutating func run(onText: (String) async throws -> Void) async throws -> FinishReason {
        defer {
            pump.cancel()
            metrics.recordCompletionTokens(completionTokens)
        }
        var last = arrival
        for try await event in pump.events {
            switch event {
            case .token(let token):
                let now = ContinuousClock.now
                if completionTokens == 0 {
                    metrics.recordTimeToFirstToken(now - arrival)
                } else {
                    metrics.recordTimePerOutputToken(now - last)
                }
                last = now
                completionTokens += 1
                let piece = text.append(token)
                if !piece.isEmpty { try await onText(piece) }
                if text.stopped { return .stop }
            case .finished(let reason, _, _):
                let tail = text.finish()
                if !tail.isEmpty { try await onText(tail) }
                return text.stopped ? .stop : reason
            }
        }
        try Task.checkCancellation()
        throw EngineError.failed("the engine ended a sequence without finishing it")
    }
}
