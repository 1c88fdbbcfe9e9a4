import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Inputs the fuzzers found (Fuzz/corpus) whose fault was the memory they cost, not a crash:
// checked on the built binary, whose peak memory its parent can measure.

/// Runs `flamingo ARGUMENTS` and returns its exit status, its stderr and its peak resident memory
/// in bytes (from wait4, for this one child).
private func runMeasured(_ arguments: [String]) throws -> (status: Int32, stderr: String, peakBytes: Int) {
    let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("flamingo-stderr-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: errURL) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, errURL.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    let argv = ([CLI.binary] + arguments).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_CORETYPE"] = env["OPENBLAS_CORETYPE"] ?? "Haswell"
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for e in envp { free(e) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, CLI.binary, &actions, nil, argv, envp)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return (status, stderr, usage.ru_maxrss * 1024)  // ru_maxrss is in KiB on Linux
}

/// fuzz-image found a 128-byte PNG whose iTXt chunk declares 1.4 GB: libpng allocated (and the
/// process touched) 1.4 GB before finding it truncated. Sixteen such images in one request would
/// have cost 22 GB. Now the chunk is skipped: a clean error in the memory of any other bad image.
@Test func pngWithAHugeTextChunkFailsInLittleMemory() throws {
    let png = CLI.repo.appendingPathComponent("Fuzz/corpus/image/oom-itxt-length-1.4GB.png").path
    let baseline = try runMeasured(["generate", "--model", CLI.models.appendingPathComponent("interval1").path,
                                    "--prompt", "<image>x", "--image", CLI.fixtures.appendingPathComponent("images/bad_truncated.png").path,
                                    "--threads", "1"])
    let r = try runMeasured(["generate", "--model", CLI.models.appendingPathComponent("interval1").path,
                             "--prompt", "<image>x", "--image", png, "--threads", "1"])
    #expect(r.status != 0)
    #expect(r.stderr.contains("truncated PNG file: unexpected end of data"), "\(r.stderr)")
    #expect(baseline.stderr.contains("truncated PNG file"), "\(baseline.stderr)")
    // The same error as a plain truncated PNG, in about the same memory (not 1.4 GB more).
    #expect(r.peakBytes < baseline.peakBytes + 64 << 20,
            "peak \(r.peakBytes >> 20) MiB for a 128-byte PNG, \(baseline.peakBytes >> 20) MiB for an ordinary truncated one")
}
