import Foundation
import Testing

// `flamingo serve --supervise` end to end: the supervisor launches a real mpirun pipeline, a rank
// is SIGKILLed while a completion streams, and the client must see the error (no hang), the
// service must come back by itself, a request sent while it is down must wait and succeed, and
// SIGTERM to the supervisor must exit 0 leaving no process behind.

/// A running `flamingo serve --supervise` (not under mpirun: it starts mpirun itself).
final class SupervisorProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    /// In the environment of the supervisor and so of mpirun and every rank it starts here.
    let marker = UUID().uuidString
    private let output = UncheckedBox(Data())
    private let lock = NSLock()

    /// - Parameter launch: a `--launch` template instead of mpirun's options.
    init(_ arguments: [String], environment: [String: String] = [:], launch: String? = nil, timeout: TimeInterval = 120) throws {
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = env["OPENBLAS_CORETYPE"] ?? "Haswell"
        env["FLAMINGO_TEST_MARKER"] = marker
        for (k, v) in MPI.environment { env[k] = v }
        for (k, v) in environment { env[k] = v }
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        let launcher = launch.map { ["--launch", $0] } ?? ["--mpirun", "/usr/bin/mpirun", "--mpirun-arg", "--oversubscribe"]
        process.arguments = ["serve", "--supervise", "--port", "0"] + launcher + arguments
        process.environment = env
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let box = output, lock = self.lock
        drain(err, into: box, lock: lock)
        port = try awaitListening(process, output: box, lock: lock, line: #"supervisor listening on http://127\.0\.0\.1:(\d+)/v1"#,
                                  what: "the supervisor", timeout: timeout)
    }

    var base: String { "http://127.0.0.1:\(port)" }
    var errorOutput: String { lock.withLock { String(decoding: output.value, as: UTF8.self) } }

    /// Processes started under this supervisor (mpirun and the ranks), by MPI rank (-1: mpirun itself).
    var children: [(pid: Int32, rank: Int)] {
        markedProcesses(marker).filter { $0.pid != process.processIdentifier }
    }

    /// Polls /health until it answers `status` (true) or `timeout` passes (false).
    func waitForHealth(_ status: Int, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if (try? CLI.get("\(base)/health").0) == status { return true }
            usleep(200_000)
        }
        return false
    }

    /// SIGTERM, then the exit status (nil: still running after `timeout`, then killed).
    func terminate(timeout: TimeInterval = 60) -> Int32? {
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for child in children { kill(child.pid, SIGKILL) }
    }
}

/// `curl` in the background: a request whose answer is read as it comes.
final class BackgroundRequest: @unchecked Sendable {
    let process = Process()
    private let output = UncheckedBox(Data())
    private let lock = NSLock()
    let started = Date()

    init(url: String, body: String, maxSeconds: Int = 120) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sN", "--max-time", "\(maxSeconds)", "-H", "Content-Type: application/json",
                             "-w", "\\nHTTP_STATUS=%{http_code}\\n", url, "-d", body]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        drain(out, into: output, lock: lock)
    }

    var text: String { lock.withLock { String(decoding: output.value, as: UTF8.self) } }

    /// Waits until the output contains `needle` (true) or `timeout` passes.
    func wait(for needle: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if text.contains(needle) { return true }
            usleep(20_000)
        }
        return false
    }

    /// Waits for curl to end; the seconds since the request started, or nil if it was still running.
    func finish(timeout: TimeInterval) -> Double? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate(); return nil }
        usleep(100_000)  // the last bytes through the pipe
        return Date().timeIntervalSince(started)
    }
}

// In the serialized ServeTests suite (whose `model` is interval1 too): these tests block a thread
// for seconds at a time, and more such suites side by side would starve the cooperative pool
// the in-process server tests need.
extension ServeTests {

    @Test func aRankKilledMidStreamIsRecoveredFrom() throws {
        try #require(MPI.available, "mpirun is missing")
        // 20 ms per hop: a 200-token stream takes seconds, so the kill lands mid-stream.
        let supervisor = try SupervisorProcess(["--np", "3", "--model", model, "--threads", "1", "--max-completion-tokens", "240"],
                                               environment: ["FLAMINGO_LINK_DELAY_US": "20000"])
        #expect(supervisor.waitForHealth(200, timeout: 120), "\(supervisor.errorOutput)")
        let chat = "\(supervisor.base)/v1/chat/completions"
        let streamed = try BackgroundRequest(url: chat, body: #"{"messages":[{"role":"user","content":"a b c"}],"max_tokens":200,"stream":true}"#)
        #expect(streamed.wait(for: #""content":"#, timeout: 60), "no content chunk: \(streamed.text)")
        let ranks = supervisor.children
        let victim = try #require(ranks.first { $0.rank == 2 }, "no rank 2 among \(ranks)")
        kill(victim.pid, SIGKILL)
        let killedAt = Date()

        // The stream ends with an error event, soon.
        let took = streamed.finish(timeout: 60)
        #expect(took != nil, "the stream did not end after rank 2 was killed: \(streamed.text)")
        let cutAfter = Date().timeIntervalSince(killedAt)
        #expect(streamed.text.contains(#""error""#) && streamed.text.contains("HTTP_STATUS=200"),
                "no error event: \(streamed.text.suffix(600))")
        #expect(!streamed.text.contains(#""finish_reason":"length""#), "the stream claims to have finished")
        print("SupervisorTests: the stream ended \(String(format: "%.2f", cutAfter)) s after rank 2 was killed")

        // Sent while it is down: it waits for the relaunch and is answered.
        let waiting = try BackgroundRequest(url: chat, body: #"{"messages":[{"role":"user","content":"a b"}],"max_tokens":3}"#)
        #expect(waiting.finish(timeout: 150) != nil)
        #expect(waiting.text.contains("HTTP_STATUS=200") && waiting.text.contains(#""chat.completion""#),
                "the request sent while the pipeline was down: \(waiting.text)")
        print("SupervisorTests: a request sent while down was answered after \(String(format: "%.2f", Date().timeIntervalSince(killedAt))) s")
        #expect(supervisor.waitForHealth(200, timeout: 120))
        let (_, metrics) = try CLI.get("\(supervisor.base)/metrics")
        #expect(metrics.contains("flamingo_pipeline_restarts_total 1"), "\(metrics.prefix(800))")
        #expect(metrics.contains("flamingo_pipeline_up 1"))
        #expect(metrics.contains("flamingo_ready 1.0"), "the pipeline's own metrics are passed on")
        let (_, health) = try CLI.get("\(supervisor.base)/health")
        #expect(health.contains(#""restarts":1"#), "\(health)")

        // SIGTERM: exit 0, nothing left running.
        #expect(supervisor.terminate() == 0, "\(supervisor.errorOutput.suffix(2000))")
        usleep(500_000)
        #expect(supervisor.children.isEmpty, "left running: \(supervisor.children)")
    }

    @Test func whileThePipelineIsDownHealthSays503WithTheReason() throws {
        try #require(MPI.available, "mpirun is missing")
        // A model directory that cannot load: every launch fails, and the supervisor keeps saying why.
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("supervised-broken-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: broken) }
        for file in ["config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json"] {
            try FileManager.default.copyItem(at: URL(fileURLWithPath: model).appendingPathComponent(file),
                                             to: broken.appendingPathComponent(file))
        }
        try Data("not safetensors".utf8).write(to: broken.appendingPathComponent("model.safetensors"))
        let supervisor = try SupervisorProcess(["--np", "2", "--model", broken.path, "--request-timeout", "2"])
        var health = (0, "")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            health = try CLI.get("\(supervisor.base)/health")
            if health.1.contains("last_failure") { break }
            usleep(200_000)
        }
        #expect(health.0 == 503, "\(health)")
        #expect(health.1.contains("last_failure") && health.1.contains("safetensors"), "\(health)")
        // A request gives up at its deadline with 503 and Retry-After.
        let started = Date()
        let r = try CLI.run(["-s", "-i", "-H", "Content-Type: application/json", "\(supervisor.base)/v1/chat/completions",
                             "-d", #"{"messages":[{"role":"user","content":"a"}],"max_tokens":2}"#], executable: "/usr/bin/curl")
        let waited = Date().timeIntervalSince(started)
        #expect(r.stdout.hasPrefix("HTTP/1.1 503"), "\(r.stdout)")
        #expect(r.stdout.lowercased().contains("retry-after:"), "\(r.stdout)")
        #expect(r.stdout.contains("model_unavailable"), "\(r.stdout)")
        #expect(waited >= 1.5 && waited < 30, "waited \(waited) s for a 2 s deadline")
        #expect(supervisor.terminate() == 0, "\(supervisor.errorOutput.suffix(2000))")
        usleep(500_000)
        #expect(supervisor.children.isEmpty, "left running: \(supervisor.children)")
    }

    @Test func sigusr1ToMpirunIsACleanStop() throws {
        try #require(MPI.available, "mpirun is missing")
        let server = try ServeProcess(["--model", model, "--threads", "1"], ranks: 3, cleanSignalMask: true)
        kill(server.process.processIdentifier, SIGUSR1)
        let deadline = Date().addingTimeInterval(60)
        while server.process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!server.process.isRunning)
        #expect(server.process.terminationStatus == 0, "\(server.errorOutput)")
        #expect(server.rankZero == nil)
    }

    /// SIGKILL of the supervisor itself: its pipeline sees its stdin lifeline close and stops.
    @Test func aKilledSupervisorLeavesNothingRunning() throws {
        try #require(MPI.available, "mpirun is missing")
        let supervisor = try SupervisorProcess(["--np", "3", "--model", model, "--threads", "1"])
        #expect(supervisor.waitForHealth(200, timeout: 120))
        #expect(supervisor.children.count >= 4, "mpirun and 3 ranks: \(supervisor.children)")
        kill(supervisor.process.processIdentifier, SIGKILL)
        let killed = Date()
        while !supervisor.children.isEmpty && Date().timeIntervalSince(killed) < 30 { usleep(50_000) }
        #expect(supervisor.children.isEmpty, "left running 30 s after the supervisor was killed: \(supervisor.children)")
        print("FaultTable: serve --supervise | the supervisor SIGKILLed | its pipeline stopped \(String(format: "%.2f", Date().timeIntervalSince(killed))) s later | left running: \(supervisor.children.count)")
    }

    /// `--launch TEMPLATE`: any launcher (srun, a wrapper) instead of mpirun.
    @Test func aLaunchTemplateStartsThePipeline() throws {
        try #require(MPI.available, "mpirun is missing")
        let supervisor = try SupervisorProcess(["--model", model, "--threads", "1"],
                                               launch: "/usr/bin/mpirun --oversubscribe -np 2 {serve}")
        #expect(supervisor.waitForHealth(200, timeout: 120), "\(supervisor.errorOutput)")
        #expect(supervisor.children.filter { $0.rank >= 0 }.count == 2)
        #expect(supervisor.terminate() == 0)
        usleep(500_000)
        #expect(supervisor.children.isEmpty)
    }

    @Test func supervisorOptionsAreChecked() throws {
        let r = try CLI.run(["serve", "--supervise", "--model", model])
        #expect(r.status != 0 && r.stderr.contains("--np"), "\(r.stderr)")
        let r2 = try CLI.run(["serve", "--np", "2", "--model", model])
        #expect(r2.status != 0 && r2.stderr.contains("--supervise"), "\(r2.stderr)")
        let r3 = try CLI.run(["serve", "--supervise", "--np", "2", "--hostfile", "/nonexistent/hosts", "--model", model])
        #expect(r3.status != 0 && r3.stderr.contains("/nonexistent/hosts"), "\(r3.stderr)")
        let r4 = try CLI.run(["serve", "--supervise", "--launch", "srun -n 2", "--model", model])
        #expect(r4.status != 0 && r4.stderr.contains("{serve}"), "\(r4.stderr)")
    }
}
