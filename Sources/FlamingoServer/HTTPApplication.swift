import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// The HTTP/1 server both front ends run (`OpenAIServer`, and `SupervisedServer` in front of a
/// supervised pipeline): the request-body gate (Expect, oversized and chunked bodies, the
/// lingering close), the idle timeout, and at most `maxConnections` connections at once.
func httpApplication(router: Router<BasicRequestContext>, configuration: ServerConfiguration, logger: Logger,
                     onListening: @escaping @Sendable (Int) async -> Void) -> some ApplicationProtocol {
    let limits = configuration.limits
    let port = configuration.port
    let connections = connectionCount(configuration, logger: logger)
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [RequestBodyGate(limit: limits.maxBodyBytes, lingerTime: .init(limits.lingerTime),
                                                    lingerTimeout: .init(limits.lingerTimeout))],
        idleTimeout: .init(limits.idleTimeout))
    return Application(
        router: router,
        server: .http1(configuration: http1),
        configuration: .init(address: .hostname(configuration.host, port: port), serverName: "flamingo",
                             backlog: min(connections, 1024),
                             availableConnectionsDelegate: .maximum(connections, logger: logger)),
        onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
        logger: logger)
}

/// The connections to hold at once: `maxConnections`, unless the open-file limit allows fewer
/// even once the soft limit is raised to the hard one (then logged, as a warning).
func connectionCount(_ configuration: ServerConfiguration, logger: Logger) -> Int {
    let wanted = configuration.maxConnections
    guard let (soft, hard) = OpenFileLimit.current() else { return wanted }
    let inUse = OpenFileLimit.openDescriptors()
    var plan = OpenFileLimit.plan(maxConnections: wanted, inUse: inUse, soft: soft, hard: hard)
    var limit = soft
    if let raise = plan.raiseSoftLimit {
        if OpenFileLimit.setSoft(raise) {
            limit = raise
            logger.info("raised the open-file limit (ulimit -n) from \(soft) to \(raise) for --max-connections \(wanted)")
        } else {
            plan = OpenFileLimit.plan(maxConnections: wanted, inUse: inUse, soft: soft, hard: soft)
        }
    }
    let connections = plan.connections
    if connections < wanted {
        logger.warning("\(OpenFileLimit.warning(maxConnections: wanted, connections: connections, limit: limit, inUse: inUse))")
    } else {
        logger.info("open-file limit \(limit), \(inUse) in use: room for --max-connections \(wanted)")
    }
    return connections
}
