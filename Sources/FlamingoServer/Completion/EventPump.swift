import FlamingoCluster

/// Reads an engine's event stream on a task of its own, so that the sequence can be cancelled at
/// any moment: by `cancel()` (a stop sequence was found), when the consumer goes away (the client
/// disconnected: its task is cancelled), or when the request's time runs out (the stream then ends
/// with `APIError.timeout`).
///
/// Why not iterate the engine's stream directly: its `onTermination` (which cancels the sequence in
/// the engine) runs only when the iterating task is cancelled or the stream ends; a consumer that
/// just stops iterating would leave the sequence running.
final class EventPump: Sendable {
    let events: AsyncThrowingStream<GenerationEvent, any Error>

    private enum Forwarder {
        case starting
        case running(Task<Void, Never>)
        case cancelled
    }
    private let forwarder = Locked(Forwarder.starting)

    init(_ upstream: AsyncThrowingStream<GenerationEvent, any Error>, deadline: ContinuousClock.Instant,
         timeout: Duration, deadlines: RequestDeadlines) {
        let (events, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        self.events = events
        let forwarder = self.forwarder
        let cancelForwarder: @Sendable () -> Void = { Self.cancel(forwarder) }
        let deadlineID = deadlines.add(deadline) {
            continuation.finish(throwing: APIError.timeout(timeout))
            cancelForwarder()
        }
        // Set before the forwarder starts, so that no termination goes unseen.
        continuation.onTermination = { _ in
            deadlines.remove(deadlineID)
            cancelForwarder()
        }
        // Detached: it needs none of the request's task-local values.
        let task = Task.detached {
            do {
                for try await event in upstream { continuation.yield(event) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        let alreadyCancelled = forwarder.withLock { state -> Bool in
            if case .cancelled = state { return true }
            state = .running(task)
            return false
        }
        if alreadyCancelled { task.cancel() }
    }

    /// Cancels the sequence in the engine. Idempotent; harmless after the stream ended.
    func cancel() {
        Self.cancel(forwarder)
    }

    private static func cancel(_ forwarder: Locked<Forwarder>) {
        let task = forwarder.withLock { state -> Task<Void, Never>? in
            defer { state = .cancelled }
            if case .running(let task) = state { return task }
            return nil
        }
        task?.cancel()
    }
}
