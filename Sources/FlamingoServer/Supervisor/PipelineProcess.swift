import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One launch of the pipeline (`mpirun ... flamingo serve ...`) under the supervisor: a child in a
/// process group of its own (so a stuck launch can be killed whole), its stdout passed through,
/// its stderr passed through line by line to `onLine` (where the supervisor reads the "serving ...
/// on URL" line and the last error).
final class PipelineProcess: @unchecked Sendable {
    let pid: pid_t
    private let exited = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var status: Int32?
    /// Held open for the child's life (closed when it has exited).
    private var lifelineWriteEnd: Int32 = -1

    /// Starts `arguments[0]` (searched in $PATH when it has no slash).
    /// - Throws: `SupervisorError.launchFailed` when the program cannot be started.
    init(arguments: [String], onLine: @escaping @Sendable (String) -> Void) throws {
        var pipe: [Int32] = [0, 0]
        guard Glibc.pipe(&pipe) == 0 else { throw SupervisorError.launchFailed("pipe: \(String(cString: strerror(errno)))") }
        // The lifeline: the child's stdin is a pipe only this process holds open. mpirun passes its
        // stdin on to rank 0, which stops the pipeline when it closes (`--exit-on-stdin-close`):
        // so the pipeline ends even when the supervisor is killed outright.
        var lifeline: [Int32] = [0, 0]
        guard Glibc.pipe(&lifeline) == 0 else {
            close(pipe[0]); close(pipe[1])
            throw SupervisorError.launchFailed("pipe: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(lifeline[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, lifeline[0], 0)
        posix_spawn_file_actions_adddup2(&actions, pipe[1], 2)
        posix_spawn_file_actions_addclose(&actions, pipe[0])
        posix_spawn_file_actions_addclose(&actions, pipe[1])
        posix_spawn_file_actions_addclose(&actions, lifeline[0])
        posix_spawn_file_actions_addclose(&actions, lifeline[1])
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        // The supervisor ignores SIGUSR1 (mpirun forwards it to the ranks: a graceful stop); the
        // child must start with default dispositions and nothing blocked.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGPIPE, SIGHUP] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawnp(&child, arguments[0], &actions, &attributes, &argv, environ)
        close(pipe[1])
        close(lifeline[0])
        lifelineWriteEnd = lifeline[1]
        guard rc == 0 else {
            close(pipe[0])
            close(lifeline[1])
            throw SupervisorError.launchFailed("\(arguments[0]): \(String(cString: strerror(rc)))")
        }
        pid = child
        let readEnd = pipe[0]
        let reader = Thread {
            var pending = Data()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(readEnd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                FileHandle.standardError.write(Data(buffer[0..<n]))
                pending.append(contentsOf: buffer[0..<n])
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    onLine(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            close(readEnd)
        }
        reader.name = "pipeline-stderr"
        reader.start()
        let spawned = child
        let waiter = Thread { [self] in
            var raw: Int32 = 0
            while waitpid(spawned, &raw, 0) < 0 && errno == EINTR {}
            lock.withLock { status = raw }
            close(lifelineWriteEnd)
            exited.signal()
        }
        waiter.name = "pipeline-wait"
        waiter.start()
    }

    /// The raw wait status once the child has exited, else nil.
    var exitStatus: Int32? { lock.withLock { status } }

    /// Waits (off Swift's cooperative pool) until the child exits; returns how it ended.
    func waitForExit() async -> String {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.exited.wait()
                self.exited.signal()
                done.resume()
            }
        }
        return Self.describe(exitStatus ?? 0)
    }

    /// Waits at most `timeout`; true when the child has exited.
    func waitForExit(timeout: Duration) -> Bool {
        let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        guard exited.wait(timeout: .now() + .milliseconds(ms)) == .success else { return false }
        exited.signal()
        return true
    }

    func signal(_ sig: Int32) { if exitStatus == nil { kill(pid, sig) } }

    /// SIGKILL to the child's whole process group (mpirun and the ranks it started here).
    func killGroup() { killpg(pid, SIGKILL) }

    static func describe(_ status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 { return "exited with status \((status >> 8) & 0xff)" }
        return "was killed by signal \(signal) (\(String(cString: strsignal(signal))))"
    }

    static func exitedCleanly(_ status: Int32?) -> Bool { status.map { $0 & 0x7f == 0 && ($0 >> 8) & 0xff == 0 } ?? false }
}

public enum SupervisorError: Error, LocalizedError, Equatable {
    case launchFailed(String)
    case badOptions(String)

    public var errorDescription: String? {
        switch self {
        case .launchFailed(let why): "cannot start the pipeline: \(why)"
        case .badOptions(let why): why
        }
    }
}
