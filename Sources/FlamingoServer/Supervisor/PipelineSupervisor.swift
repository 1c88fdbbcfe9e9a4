import Foundation
import Logging
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the pipeline running under `flamingo serve --supervise`: launches it (`mpirun ... flamingo
/// serve ...`), learns its server's address from the "serving ... on URL" line rank 0 prints, watches
/// it (the process, and rank 0's /health), and when it ends or stops answering launches it again
/// after a backoff (1 s, doubling to `maximumBackoff`; back to 1 s once a launch stayed up a
/// minute). As a `Service`: a graceful shutdown stops it with SIGUSR1 (mpirun forwards it; rank 0
/// then stops every rank, which exit 0) and waits for it, killing it after `stopTimeout`.
public final class PipelineSupervisor: Service, @unchecked Sendable {
    public struct Options: Sendable {
        /// The command that starts the pipeline; its rank 0 must print "serving ... on http://HOST:PORT/v1".
        public var command: [String]
        public var maximumBackoff: Duration = .seconds(30)
        /// How often rank 0's /health is asked, and how many missed answers in a row mean it is stuck.
        public var healthInterval: Duration = .seconds(1)
        public var healthFailures = 5
        /// How long a stop may take before the pipeline is killed.
        public var stopTimeout: Duration = .seconds(40)
        public init(command: [String]) { self.command = command }
    }

    public enum Phase: Sendable, Equatable {
        case starting
        case ready(host: String, port: Int)
        case down(reason: String)
        case stopped
    }

    public struct Snapshot: Sendable {
        public var phase: Phase
        /// Launches after the first.
        public var restarts: Int
        /// Why it last went down (nil: never).
        public var lastFailure: String?
        public var launchedAt: ContinuousClock.Instant?
    }

    public let options: Options
    let logger: Logger
    private let state: Locked<Snapshot>
    private let process = Locked<PipelineProcess?>(nil)
    private let stopping = Locked(false)

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
        state = Locked(Snapshot(phase: .starting, restarts: 0, lastFailure: nil, launchedAt: nil))
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// The upstream's address once the pipeline serves; nil while it is starting or down.
    public var upstream: (host: String, port: Int)? {
        if case .ready(let host, let port) = snapshot.phase { return (host, port) }
        return nil
    }

    /// Why requests cannot be served now (nil when they can).
    public var unavailableReason: String? {
        switch snapshot.phase {
        case .ready: nil
        case .starting: snapshot.restarts == 0 ? "the pipeline is starting" : "the pipeline is restarting (after: \(snapshot.lastFailure ?? "?"))"
        case .down(let reason): "the pipeline is down: \(reason)"
        case .stopped: "the server is shutting down"
        }
    }

    public func run() async throws {
        var backoff: Duration = .seconds(1)
        await withGracefulShutdownHandler {
            while !stopping.withLock({ $0 }) {
                let launched = ContinuousClock.now
                let reason = await runOnce()
                if stopping.withLock({ $0 }) { break }
                let upFor = ContinuousClock.now - launched
                if upFor >= .seconds(60) { backoff = .seconds(1) }
                state.withLock {
                    $0.phase = .down(reason: reason)
                    $0.lastFailure = reason
                }
                logger.error("pipeline down: \(reason); relaunching in \(backoff)")
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, options.maximumBackoff)
                if stopping.withLock({ $0 }) { break }
                state.withLock {
                    $0.restarts += 1
                    $0.phase = .starting
                }
            }
        } onGracefulShutdown: {
            self.stop()
        }
        // Wait for the last launch to end (stop() signalled it).
        if let running = process.withLock({ $0 }) {
            if !running.waitForExit(timeout: options.stopTimeout) {
                logger.error("the pipeline did not stop within \(options.stopTimeout): killing it")
                running.killGroup()
                _ = running.waitForExit(timeout: .seconds(5))
            }
        }
        state.withLock { $0.phase = .stopped }
    }

    /// One launch, until it ends (or is killed as stuck); returns why it ended.
    private func runOnce() async -> String {
        let lastError = Locked<String?>(nil)
        let lastLine = Locked<String?>(nil)  // what it said last, when it named no error
        let child: PipelineProcess
        do {
            child = try PipelineProcess(arguments: options.command) { [state] line in
                if let (host, port) = Self.servingAddress(in: line) {
                    state.withLock { $0.phase = .ready(host: host, port: port) }
                } else if line.hasPrefix("error:") || line.contains("] error") || line.hasPrefix("mpirun noticed") {
                    lastError.withLock { $0 = String(line.prefix(300)) }
                } else if !line.trimmingCharacters(in: .whitespaces).isEmpty, !line.hasPrefix("---") {
                    lastLine.withLock { $0 = String(line.prefix(300)) }
                }
            }
        } catch {
            return error.localizedDescription
        }
        process.withLock { $0 = child }
        state.withLock { $0.launchedAt = .now }
        logger.info("pipeline launched (pid \(child.pid)): \(options.command.joined(separator: " "))")
        if stopping.withLock({ $0 }) { child.signal(SIGUSR1) }
        let watch = Task { await watchHealth(of: child) }
        let how = await child.waitForExit()
        watch.cancel()
        process.withLock { $0 = nil }
        // mpirun can leave ranks it started here behind when it is killed: end the group.
        child.killGroup()
        state.withLock { $0.phase = .starting }
        if let stuck = stuckReason.withLock({ $0 }) {
            stuckReason.withLock { $0 = nil }
            return stuck
        }
        let said = lastError.withLock { $0 } ?? lastLine.withLock { $0 }
        return "the pipeline (\(options.command.first ?? "mpirun")) \(how)" + (said.map { ": \($0)" } ?? "")
    }

    private let stuckReason = Locked<String?>(nil)

    /// Asks rank 0's /health every `healthInterval` once it serves; after `healthFailures` misses in a
    /// row (no answer at all: a 503 is an answer) the pipeline counts as stuck and is killed.
    private func watchHealth(of child: PipelineProcess) async {
        var misses = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: options.healthInterval)
            guard let (host, port) = upstream, !stopping.withLock({ $0 }) else { misses = 0; continue }
            do {
                let response = try await UpstreamClient(host: host, port: port)
                    .send(method: "GET", uri: "/health", headers: [], body: nil, timeout: .seconds(2))
                _ = try? await response.collect(upTo: 1 << 16)
                misses = 0
            } catch {
                misses += 1
                if misses >= options.healthFailures {
                    let why = "rank 0 did not answer /health \(misses) times in a row (\(error.localizedDescription))"
                    stuckReason.withLock { $0 = why }
                    logger.error("pipeline stuck: \(why); killing it")
                    child.signal(SIGTERM)
                    if !child.waitForExit(timeout: .seconds(5)) { child.killGroup() }
                    return
                }
            }
        }
    }

    /// Stops the pipeline gracefully (SIGUSR1: rank 0 finishes and stops every rank) and relaunches no more.
    public func stop() {
        stopping.withLock { $0 = true }
        state.withLock { $0.phase = .stopped }
        process.withLock { $0 }?.signal(SIGUSR1)
    }

    /// "serving MODEL on http://HOST:PORT/v1..." → (HOST, PORT).
    static func servingAddress(in line: String) -> (String, Int)? {
        guard line.contains("serving "), let start = line.range(of: " on http://") else { return nil }
        let rest = line[start.upperBound...]
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let hostPort = rest[..<slash]
        guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]) else { return nil }
        var host = String(hostPort[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}
