import Foundation
import Testing

// `flamingo serve` end to end: the real binary on a loopback port with a fixture model, driven by
// the official openai Python client (scripts/test-client/e2e.py). Greedy answers must equal
// `flamingo generate --prompt` on the prompt the chat template renders.

/// A running `flamingo serve`, alone or under `mpirun -np ranks`.
final class ServeProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    let stderr = UncheckedBox(Data())
    let ranks: Int?
    /// Marks this server's processes (in their environment), to find rank 0 under mpirun.
    let marker = UUID().uuidString
    private let lock = NSLock()

    /// Starts the server on a free port and waits until it listens.
    /// - Parameter openFileLimit: run it under `ulimit -n` this (alone only).
    /// - Parameter cleanSignalMask: start mpirun with no signal blocked, as a shell or systemd would
    ///   (Foundation's Process passes on the mask of the thread that spawns it, and Dispatch's
    ///   threads block nearly every signal: mpirun would never see a SIGUSR1).
    init(_ arguments: [String], environment: [String: String] = [:], ranks: Int? = nil, openFileLimit: Int? = nil,
         timeout: TimeInterval = 120, cleanSignalMask: Bool = false) throws {
        self.ranks = ranks
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = env["OPENBLAS_CORETYPE"] ?? "Haswell"
        env["FLAMINGO_TEST_MARKER"] = marker
        for (k, v) in environment { env[k] = v }
        let serve = ["serve", "--port", "0"] + arguments
        if let ranks {
            for (k, v) in MPI.environment { env[k] = v }
            let forwarded = (["FLAMINGO_TEST_MARKER"] + environment.keys).flatMap { ["-x", $0] }
            let mpirun = ["/usr/bin/mpirun", "--oversubscribe", "-np", "\(ranks)"] + forwarded + ["--", CLI.binary] + serve
            if cleanSignalMask {
                process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                process.arguments = ["python3", "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])"] + mpirun
            } else {
                process.executableURL = URL(fileURLWithPath: mpirun[0])
                process.arguments = Array(mpirun.dropFirst())
            }
        } else if let openFileLimit {
            // exec: the shell becomes the server, so signals reach it.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(openFileLimit) && exec \"$0\" \"$@\"", CLI.binary] + serve
        } else {
            process.executableURL = URL(fileURLWithPath: CLI.binary)
            process.arguments = serve
        }
        process.environment = env
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let box = stderr, lock = self.lock
        drain(err, into: box, lock: lock)
        port = try awaitListening(process, output: box, lock: lock, line: #"serving \S+ on http://127\.0\.0\.1:(\d+)/v1"#,
                                  what: "flamingo serve", timeout: timeout)
    }

    var url: String { "http://127.0.0.1:\(port)/v1" }
    var errorOutput: String { lock.withLock { String(decoding: stderr.value, as: UTF8.self) } }

    /// SIGTERM (to rank 0 under mpirun), then the exit status (nil if it did not exit within `timeout`).
    func terminate(timeout: TimeInterval = 30) -> Int32? {
        kill(ranks == nil ? process.processIdentifier : rankZero ?? process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    /// Processes of this server still alive (any rank, and mpirun).
    var survivors: [Int32] { markedProcesses(marker).map(\.pid) }

    /// Under mpirun: the process of rank 0 (the one serving HTTP).
    var rankZero: Int32? { markedProcesses(marker).first { $0.rank == 0 }?.pid }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// Processes whose environment has FLAMINGO_TEST_MARKER=marker, with their MPI rank (-1: none).
func markedProcesses(_ marker: String) -> [(pid: Int32, rank: Int)] {
    var found: [(Int32, Int)] = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), pid != getpid(),
              let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
        let vars = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard vars.contains("FLAMINGO_TEST_MARKER=\(marker)") else { continue }
        // A zombie's environment reads empty; a live process has its rank, or none (mpirun).
        let rank = vars.first { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }.flatMap { Int($0.dropFirst(21)) } ?? -1
        found.append((pid, rank))
    }
    return found
}

/// The port in the first line of `output` matching `line` (a pattern ending in ":PORT/v1"), waiting
/// up to `timeout`; throws (and ends `process`) when it never comes.
func awaitListening(_ process: Process, output box: UncheckedBox<Data>, lock: NSLock, line: String, what: String,
                    timeout: TimeInterval) throws -> Int {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline && process.isRunning {
        usleep(20_000)
        let text = lock.withLock { String(decoding: box.value, as: UTF8.self) }
        if let range = text.range(of: line, options: .regularExpression),
           let port = Int(text[range].split(separator: ":").last!.split(separator: "/").first!) {
            return port
        }
    }
    if process.isRunning { process.terminate() }
    throw CLIFailure("\(what) did not start: \(lock.withLock { String(decoding: box.value, as: UTF8.self) })")
}

/// Appends everything `pipe` delivers to `box` (under `lock`) until it closes. Raw read(2) with
/// EINTR retried: FileHandle.availableData traps on EINTR, which a SIGCHLD can cause.
func drain(_ pipe: Pipe, into box: UncheckedBox<Data>, lock: NSLock) {
    let fd = pipe.fileHandleForReading.fileDescriptor
    let thread = Thread {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            lock.lock(); box.value.append(contentsOf: buffer[0..<n]); lock.unlock()
        }
    }
    thread.start()
}

struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

enum Python {
    static let clients = CLI.repo.appendingPathComponent("scripts/test-client")

    /// Runs a test-client script; returns its exit status and stdout.
    static func run(_ script: String, _ arguments: [String], timeout: TimeInterval = 600) throws -> CLI.Result {
        try CLI.run([clients.appendingPathComponent(script).path] + arguments, timeout: timeout,
                    executable: "/usr/bin/env", prepend: ["python3"])
    }

    static var hasOpenAI: Bool { has("openai") }

    /// Whether python3 can import these modules ("openai, requests").
    static func has(_ modules: String) -> Bool {
        (try? CLI.run(["-c", "import \(modules)"], executable: "/usr/bin/env", prepend: ["python3"]).status) == 0
    }
}

extension CLI {
    static func run(_ arguments: [String], timeout: TimeInterval = 120, executable: String, prepend: [String]) throws -> Result {
        try run(prepend + arguments, timeout: timeout, executable: executable)
    }

    /// GET on the server, outside the openai client.
    static func get(_ url: String) throws -> (Int, String) {
        let r = try run(["-c", "import sys, urllib.request, urllib.error\ntry:\n r = urllib.request.urlopen(sys.argv[1], timeout=30); print(r.status); print(r.read().decode())\nexcept urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())", url],
                        executable: "/usr/bin/env", prepend: ["python3"])
        let lines = r.stdout.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        return (Int(lines.first ?? "") ?? -1, lines.count > 1 ? String(lines[1]) : "")
    }
}

struct E2EReport: Decodable {
    struct Check: Decodable { let name: String; let ok: Bool; let detail: String }
    struct Greedy: Decodable {
        let name: String
        let prompt: String
        let images: [String]
        let max_tokens: Int
        let text: String
        let finish_reason: String
        let completion_tokens: Int
        let prompt_tokens: Int
    }
    let checks: [Check]
    let greedy: [Greedy]
}

private func runSuite(_ suite: String, server: ServeProcess, apiKey: String) throws -> E2EReport? {
    let r = try Python.run("e2e.py", ["--url", server.url, "--api-key", apiKey, "--suite", suite,
                                      "--images", CLI.models.appendingPathComponent("images").path])
    guard let report = try? JSONDecoder().decode(E2EReport.self, from: Data(r.stdout.utf8)) else {
        Issue.record("e2e.py \(suite) printed no report (status \(r.status)): \(r.stdout)\n\(r.stderr)\nserver: \(server.errorOutput)")
        return nil
    }
    for check in report.checks where !check.ok {
        Issue.record("\(suite)/\(check.name): \(check.detail)")
    }
    #expect(r.status == (report.checks.allSatisfy(\.ok) ? 0 : 1))
    return report
}

@Suite(.serialized) struct ServeTests {
    let model = CLI.models.appendingPathComponent("interval1").path

    /// Alone, and pipelined over 3 ranks under mpirun (SIGTERM to rank 0 ends every rank, exit 0).
    @Test(arguments: [nil, 3] as [Int?])
    func openAIClientEndToEnd(ranks: Int?) throws {
        try #require(Python.hasOpenAI, "the openai Python package is missing: pip install openai (scripts/setup installs it)")
        if ranks != nil { try #require(MPI.available, "mpirun is missing") }
        let key = "test-key-\(UUID().uuidString)"
        let server = try ServeProcess(["--model", model, "--max-images", "4", "--max-body-size", "2MiB",
                                       "--max-completion-tokens", "64", "--threads", "1"],
                                      environment: ["FLAMINGO_API_KEY": key], ranks: ranks)
        guard let report = try runSuite("main", server: server, apiKey: key) else { return }
        #expect(report.checks.count >= 20)

        // Greedy answers equal `flamingo generate` on the rendered prompt.
        #expect(report.greedy.count >= 10)
        for g in report.greedy {
            var args = ["generate", "--model", model, "--prompt", g.prompt, "--greedy", "--json", "--max-tokens", "\(g.max_tokens)",
                        "--threads", "1"]
            for image in g.images { args += ["--image", image] }
            let r = try CLI.run(args)
            #expect(r.status == 0, "\(g.name): \(r.stderr)")
            guard r.status == 0 else { continue }
            let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(r.stdout.utf8))
            #expect(out.text == g.text, "\(g.name): generate says \(String(describing: out.text)), the server \(g.text)")
            #expect(out.finish_reason == g.finish_reason, "\(g.name)")
            #expect(out.tokens.count == g.completion_tokens, "\(g.name)")
            #expect(out.prompt_tokens == g.prompt_tokens, "\(g.name)")
        }

        // /metrics saw it all; /health is open without the key.
        let (status, metrics) = try CLI.get("http://127.0.0.1:\(server.port)/metrics")
        #expect(status == 200)
        for needle in [#"flamingo_http_requests_total{path="/v1/chat/completions",status="200"}"#,
                       #"flamingo_http_requests_total{path="/v1/chat/completions",status="401"} 2"#,
                       #"flamingo_http_requests_total{path="/v1/chat/completions",status="413"} 1"#,
                       "flamingo_completion_tokens_total", "flamingo_time_to_first_token_seconds_bucket",
                       "flamingo_active_sequences 0.0", "flamingo_queue_depth 0.0", "flamingo_ready 1.0"] {
            #expect(metrics.contains(needle), "metrics lack \(needle)")
        }
        // Every stage rank reports the seconds it computed (ranks > 0 send STATS every second, so
        // the figures may lag the requests by up to a second: wait a few seconds for them).
        var lines: [Int: String] = [:]
        let deadline = Date().addingTimeInterval(5)
        var current = metrics
        while true {
            var missing = false
            for rank in 0..<(ranks ?? 1) {
                let prefix = #"flamingo_stage_busy_seconds_total{rank="\#(rank)"} "#
                let line = current.split(separator: "\n").first { $0.hasPrefix(prefix) }
                lines[rank] = line.map(String.init) ?? "missing"
                if (line.flatMap { Double($0.dropFirst(prefix.count)) } ?? 0) <= 0 { missing = true }
            }
            if !missing || Date() > deadline { break }
            Thread.sleep(forTimeInterval: 0.25)
            current = try CLI.get("http://127.0.0.1:\(server.port)/metrics").1
        }
        for rank in 0..<(ranks ?? 1) {
            let prefix = #"flamingo_stage_busy_seconds_total{rank="\#(rank)"} "#
            let seconds = lines[rank].flatMap { Double($0.dropFirst(prefix.count)) } ?? 0
            #expect(seconds > 0, "rank \(rank) busy seconds: \(lines[rank] ?? "missing")")
        }
        #expect(try CLI.get("http://127.0.0.1:\(server.port)/health").0 == 200)

        // SIGTERM: a clean exit 0.
        #expect(server.terminate() == 0, "\(server.errorOutput)")
        #expect(!server.errorOutput.contains("error"), "\(server.errorOutput)")
    }

    /// The README's serving example: the bundled demo model over 3 ranks with the plain chat
    /// template, asked with scripts/test-client/chat.py (openai client, streamed): every
    /// one-image question of models/demo/examples/prompts.txt gets its expected answer.
    @Test func demoModelServedOverThreeRanksAnswersTheExamples() throws {
        try #require(Python.hasOpenAI, "the openai Python package is missing: pip install openai (scripts/setup installs it)")
        try #require(MPI.available, "mpirun is missing")
        let demo = CLI.repo.appendingPathComponent("models/demo")
        let examples = demo.appendingPathComponent("examples")
        let server = try ServeProcess(["--model", demo.path, "--chat-template", "plain", "--threads", "1"], ranks: 3)
        // Questions by image, one client process per image.
        var byImage: [String: [(question: String, answer: String)]] = [:]
        for line in try String(contentsOf: examples.appendingPathComponent("prompts.txt"), encoding: .utf8).split(separator: "\n") {
            // "<image>Question: ...? Answer:  [file.png]  =>  answer."
            let fields = line.components(separatedBy: "  ")
            guard !line.hasPrefix("#"), fields.count == 4, fields[2] == "=>", line.hasPrefix("<image>"),
                  !fields[1].contains(" ") else { continue }
            let image = examples.appendingPathComponent(String(fields[1].dropFirst().dropLast())).path
            byImage[image, default: []].append((String(fields[0].dropFirst("<image>".count)), fields[3]))
        }
        var asked = 0
        for (image, cases) in byImage.sorted(by: { $0.key < $1.key }) {
            let r = try Python.run("chat.py", ["--url", server.url, "--image", image, "--max-tokens", "8"] + cases.map(\.question))
            #expect(r.status == 0, "\(r.stderr)")
            let answers = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            for (i, c) in cases.enumerated() {
                #expect(i < answers.count && answers[i] == c.answer, "\(image): \(c.question) -> \(i < answers.count ? answers[i] : "nothing")")
            }
            asked += cases.count
        }
        #expect(asked >= 12)
        #expect(server.terminate() == 0, "\(server.errorOutput)")
    }

    @Test func fullQueueIs429() throws {
        try #require(Python.hasOpenAI, "the openai Python package is missing: pip install openai")
        let server = try ServeProcess(["--model", model, "--max-queue", "0", "--threads", "1"])
        _ = try runSuite("queue", server: server, apiKey: "none")
        #expect(server.terminate() == 0)
    }

    @Test func servesOnLoopbackWithoutAKeyByDefault() throws {
        let server = try ServeProcess(["--model", model, "--threads", "1"], environment: ["FLAMINGO_API_KEY": ""])
        #expect(server.errorOutput.contains("on http://127.0.0.1:\(server.port)/v1\n"), "\(server.errorOutput)")
        let (status, body) = try CLI.get("http://127.0.0.1:\(server.port)/v1/models")
        #expect(status == 200)
        #expect(body.contains(#""id":"interval1""#))
        #expect(server.terminate() == 0)
    }

    @Test func badStartIsOneErrorLine() throws {
        let r = try CLI.run(["serve", "--model", "/nonexistent/model", "--port", "0"], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderrLines.count == 1 && r.stderrLines[0].hasPrefix("error: "), "\(r.stderr)")
        let badOption = try CLI.run(["serve", "--model", model, "--max-body-size", "lots"], timeout: 30)
        #expect(badOption.status != 0)
        #expect(badOption.stderr.contains("--max-body-size"))
    }
}
