/// The time limits of requests in flight, watched by one loop for the whole server.
///
/// Why not a sleeping task per request: a cancelled `Task.sleep` keeps its timer (about a
/// kilobyte) until the deadline would have passed, so with a 10-minute limit a busy server would
/// hold ten minutes' worth of timers.
final class RequestDeadlines: Sendable {
    private struct State {
        var nextID = 0
        var entries: [Int: (deadline: ContinuousClock.Instant, expire: @Sendable () -> Void)] = [:]
    }

    private let state = Locked(State())
    /// How late a deadline may be noticed.
    let tick: Duration

    init(tick: Duration = .milliseconds(100)) {
        self.tick = tick
    }

    /// Calls `expire` once `deadline` has passed, unless `remove`d before.
    func add(_ deadline: ContinuousClock.Instant, expire: @escaping @Sendable () -> Void) -> Int {
        state.withLock { s in
            s.nextID += 1
            s.entries[s.nextID] = (deadline, expire)
            return s.nextID
        }
    }

    func remove(_ id: Int) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }

    var count: Int { state.withLock { $0.entries.count } }

    /// Expires what is due, every `tick`, until cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            expireDue(now: .now)
        }
    }

    func expireDue(now: ContinuousClock.Instant) {
        let due = state.withLock { s -> [@Sendable () -> Void] in
            let ids = s.entries.filter { $0.value.deadline <= now }.map(\.key)
            return ids.compactMap { s.entries.removeValue(forKey: $0)?.expire }
        }
        for expire in due { expire() }
    }
}
