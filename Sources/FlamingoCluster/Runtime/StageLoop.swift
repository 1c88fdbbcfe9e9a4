import FlamingoCore
import FlamingoModel
import Foundation

extension PipelineRuntime {
    /// A worker rank's loop: handle stage messages until rank 0 says SHUTDOWN. It checks rank 0's
    /// PLAN against its own, answers STATS_REQUEST, and with `reportEvery` (serving) also sends
    /// rank 0 its figures (STATS) that often, for /metrics. A failure here is sent to rank 0 as
    /// ERROR before it is thrown.
    static func serveStage(_ worker: inout StageWorker, transport: StageTransport, fingerprint: Fingerprint,
                           started: ContinuousClock.Instant, reportEvery: Duration? = nil) throws {
        let send: (Message, Int) throws -> Void = { message, rank in try transport.send(message, to: rank) }
        func figures() -> Message {
            var report = Message(kind: .stats)
            report.stats = RankStats.current(rank: transport.rank, assignment: worker.assignment, worker: worker,
                                             transport: transport, started: started)
            return report
        }
        var lastReport = ContinuousClock.now
        while true {
            if let reportEvery, ContinuousClock.now - lastReport >= reportEvery {
                lastReport = ContinuousClock.now
                try send(figures(), 0)
            }
            guard let message = try transport.receive(timeout: reportEvery.map { min($0, .seconds(1)) } ?? .seconds(1)) else { continue }
            do {
                switch message.kind {
                case .shutdown:
                    if !message.errorMessage.isEmpty { throw PipelineError.stageFailed(rank: 0, message: message.errorMessage) }
                    transport.flush(timeout: .seconds(5))
                    return
                case .statsRequest:
                    try send(figures(), 0)
                case .plan:
                    let own = worker.plan.wire(configHash: fingerprint.config)
                    guard let plan = message.plan, plan == own else {
                        let theirs = message.plan?.stages.first { $0.rank == UInt32(transport.rank) }.map { "\($0.layers)" } ?? "none"
                        throw PipelineError.mismatchedPeer(rank: 0, reason:
                            "rank 0's plan gives this rank layers \(theirs), its own plan \(worker.assignment.layers) (start every rank with the same layout options and model)")
                    }
                case .visualTokens, .prefill, .decode, .cancel:
                    try worker.handle(message, send: send)
                case .heartbeat:
                    continue
                default:
                    throw PipelineError.protocolViolation("rank \(transport.rank) got an unexpected \(message.kind)")
                }
            } catch PipelineError.stageFailed(rank: 0, let why) {
                throw PipelineError.stageFailed(rank: 0, message: why)  // rank 0 already knows
            } catch {
                try? transport.send(Message(kind: .error, errorMessage: error.localizedDescription), to: 0)
                transport.flush(timeout: .seconds(2))
                throw error
            }
        }
    }
}
