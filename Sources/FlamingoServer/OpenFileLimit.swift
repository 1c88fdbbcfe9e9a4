import Foundation

/// The process's open-file limit (`ulimit -n`, RLIMIT_NOFILE) against the connections the server is
/// configured to hold: each connection is a descriptor. Like Go's runtime, the soft limit is raised
/// towards the hard one when it is too low; what still does not fit lowers the connection count,
/// so that accepting never fails with EMFILE.
struct OpenFileLimit: Equatable {
    /// Descriptors kept for everything else the process opens (model files, MPI, image files, logs).
    static let reserve = 64

    /// The soft limit to set, when it must rise.
    var raiseSoftLimit: Int?
    /// The connections the server will hold at once.
    var connections: Int

    /// - Parameters:
    ///   - maxConnections: what the operator asked for (--max-connections).
    ///   - inUse: descriptors open now.
    ///   - soft, hard: the current limits.
    static func plan(maxConnections: Int, inUse: Int, soft: Int, hard: Int) -> OpenFileLimit {
        let needed = inUse + reserve + maxConnections
        let raise = soft < needed && hard > soft ? min(needed, hard) : nil
        let limit = raise ?? soft
        return OpenFileLimit(raiseSoftLimit: raise, connections: max(1, min(maxConnections, limit - inUse - reserve)))
    }

    /// The line to log when the limit lowers the connection count.
    static func warning(maxConnections: Int, connections: Int, limit: Int, inUse: Int) -> String {
        "the open-file limit (ulimit -n) is \(limit) with \(inUse) files open: serving at most \(connections) connections " +
            "at once instead of --max-connections \(maxConnections); raise it (ulimit -n \(inUse + reserve + maxConnections)) " +
            "or lower --max-connections"
    }

    /// The current limits, (soft, hard); nil where they cannot be read.
    static func current() -> (soft: Int, hard: Int)? {
        var limits = rlimit()
        guard getrlimit(resource, &limits) == 0 else { return nil }
        return (clamp(limits.rlim_cur), clamp(limits.rlim_max))
    }

    /// Sets the soft limit; false if the system refused.
    static func setSoft(_ soft: Int) -> Bool {
        var limits = rlimit()
        guard getrlimit(resource, &limits) == 0 else { return false }
        limits.rlim_cur = rlim_t(soft)
        return setrlimit(resource, &limits) == 0
    }

    /// Descriptors open in this process now (/dev/fd, on Linux /proc/self/fd; a guess where missing).
    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/dev/fd").count) ?? 16
    }

    private static func clamp(_ value: rlim_t) -> Int {
        value >= rlim_t(Int.max) ? Int.max : Int(value)  // RLIM_INFINITY
    }

    #if os(Linux)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resource = RLIMIT_NOFILE
    #endif
}
