import Foundation
import Testing

// The fault table (docs/faults.md), one test per row that can run on one machine: a rank
// SIGKILLed or SIGSTOPped in each phase under `generate` and under the supervised server, a frame
// damaged in transit, damaged or unreadable checkpoints on one rank or all, a rank with another
// model. Each case checks what the issue asks of a row: how long until the error, what the user
// sees (an error naming the cause, never a hang, never a success with wrong output), and that
// nothing is left running. Each prints one "FaultTable:" line, the figures in docs/faults.md.

/// `mpirun -np ranks flamingo ARGS` in the background, its processes marked in their environment.
final class MarkedRun: @unchecked Sendable {
    let process = Process()
    let marker = UUID().uuidString
    private let output = UncheckedBox(Data())
    private let lock = NSLock()

    init(ranks: Int, _ arguments: [String], environment: [String: String] = [:], mpmd: [String]? = nil) throws {
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = env["OPENBLAS_CORETYPE"] ?? "Haswell"
        env["FLAMINGO_TEST_MARKER"] = marker
        for (k, v) in MPI.environment { env[k] = v }
        for (k, v) in environment { env[k] = v }
        let forwarded = (["FLAMINGO_TEST_MARKER"] + environment.keys).flatMap { ["-x", $0] }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/mpirun")
        var args = ["--oversubscribe"] + forwarded + ["-np", "\(ranks)", CLI.binary] + arguments
        if let mpmd { args += [":", "-np", "1", CLI.binary] + mpmd }  // one more rank, its own arguments
        process.arguments = args
        process.environment = env
        let err = Pipe()
        process.standardError = err
        process.standardOutput = err
        try process.run()
        let box = output, lock = self.lock
        drain(err, into: box, lock: lock)
    }

    var text: String { lock.withLock { String(decoding: output.value, as: UTF8.self) } }

    func wait(for needle: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if text.contains(needle) { return true }
            usleep(10_000)
        }
        return text.contains(needle)
    }

    /// The pid of MPI rank `rank` of this run.
    func pid(ofRank rank: Int) -> Int32? { markedProcesses(marker).first { $0.rank == rank }?.pid }

    /// Seconds until mpirun exits (nil: still running after `timeout`; then it is killed).
    func finish(timeout: TimeInterval) -> Double? {
        let start = Date()
        while process.isRunning && Date().timeIntervalSince(start) < timeout { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return Date().timeIntervalSince(start)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for p in markedProcesses(marker) { kill(p.pid, SIGKILL) }
    }
}

/// What the user saw: the lines that say why the run ended.
private func reasonLines(_ text: String) -> String {
    text.split(separator: "\n").filter { $0.hasPrefix("error:") || $0.contains("noticed that process") }
        .prefix(2).joined(separator: " | ")
}

private let faultModel = CLI.models.appendingPathComponent("interval1").path
private let generate = ["generate", "--model", faultModel, "--prompt", "a b c", "--max-tokens", "24", "--greedy",
                        "--threads", "1", "--peer-timeout", "3"]

struct FaultCase: CustomTestStringConvertible, Sendable {
    let signal: Int32
    let rank: Int
    let phase: String
    var testDescription: String { "SIG\(signal == SIGKILL ? "KILL" : "STOP") rank \(rank) in \(phase)" }
    static func all(phases: [String], ranks: [Int]) -> [FaultCase] {
        [SIGKILL, SIGSTOP].flatMap { s in ranks.flatMap { r in phases.map { FaultCase(signal: s, rank: r, phase: $0) } } }
    }
}

// In the serialized ServeTests suite: see SupervisorTests.swift.
extension ServeTests {
    /// `generate` over 3 ranks: the rank held in `phase` (FLAMINGO_FAULT_HOLD) gets the signal.
    @Test(arguments: FaultCase.all(phases: ["load", "prefill", "decode"], ranks: [0, 1, 2]))
    func generateWithADeadOrStoppedRank(_ fault: FaultCase) throws {
        try #require(MPI.available, "mpirun is missing")
        let run = try MarkedRun(ranks: 3, generate, environment: ["FLAMINGO_FAULT_HOLD": "\(fault.phase):\(fault.rank):20000"])
        #expect(run.wait(for: "fault: rank \(fault.rank) holds in \(fault.phase)", timeout: 60), "never held: \(run.text)")
        let pid = try #require(run.pid(ofRank: fault.rank), "no rank \(fault.rank): \(run.text)")
        kill(pid, fault.signal)
        let seconds = run.finish(timeout: 30)
        #expect(seconds != nil, "\(fault.testDescription): still running 30 s later: \(run.text)")
        #expect(run.process.terminationStatus != 0, "\(fault.testDescription): exit 0")
        let why = reasonLines(run.text)
        #expect(!why.isEmpty, "\(fault.testDescription): no error line: \(run.text)")
        #expect(!run.text.contains("\"text\""), "a result was printed")
        usleep(300_000)
        let left = markedProcesses(run.marker)
        #expect(left.isEmpty, "\(fault.testDescription): left running \(left)")
        print("FaultTable: generate | \(fault.testDescription) | exit \(run.process.terminationStatus) after \(String(format: "%.2f", seconds ?? -1)) s | \(why) | left running: \(left.count)")
    }

    @Test(arguments: ["flip", "truncate", "step"])
    func aFrameDamagedInTransitEndsTheRunWithAClearError(_ damage: String) throws {
        try #require(MPI.available, "mpirun is missing")
        // Rank 1's 2nd frame: the prefill's hidden states to rank 2 (its 1st is HELLO).
        let run = try MarkedRun(ranks: 3, generate, environment: ["FLAMINGO_FAULT_FRAME": "\(damage):1:2"])
        let seconds = run.finish(timeout: 60)
        #expect(seconds != nil, "still running: \(run.text)")
        #expect(run.process.terminationStatus != 0)
        let why = reasonLines(run.text)
        let expected = damage == "step" ? "step starts at" : "invalid frame from rank 1"
        #expect(why.contains(expected), "\(damage): \(run.text)")
        usleep(300_000)
        #expect(markedProcesses(run.marker).isEmpty)
        print("FaultTable: generate | frame \(damage) (rank 1 -> 2) | exit \(run.process.terminationStatus) after \(String(format: "%.2f", seconds ?? -1)) s | \(why) | left running: \(markedProcesses(run.marker).count)")
    }

    /// Damaged checkpoints under mpirun: every rank refuses at load, with the file named.
    @Test(arguments: ["truncated shard", "overlapping tensors"])
    func aDamagedShardIsRefusedAtLoad(_ damage: String) throws {
        try #require(MPI.available, "mpirun is missing")
        let dir = try CLI.scratchModel("sharded")
        defer { try? FileManager.default.removeItem(at: dir) }
        let shard = dir.appendingPathComponent("model-00003-of-00008.safetensors")
        if damage == "truncated shard" {
            let bytes = try Data(contentsOf: shard)
            try bytes.prefix(bytes.count / 2).write(to: shard)
        } else {
            var editor = try SafetensorsEditor(shard)
            let names = editor.header.keys.filter { $0 != "__metadata__" }.sorted()
            try #require(names.count >= 2, "shard 3 holds \(names.count) tensors")
            let first = (editor.header[names[0]] as! [String: Any])["data_offsets"] as! [Int]
            editor.edit(names[1]) { entry in
                let own = entry["data_offsets"] as! [Int]
                entry["data_offsets"] = [first[0], first[0] + (own[1] - own[0])]
            }
            try editor.write(shard)
        }
        let args = ["generate", "--model", dir.path, "--prompt", "a b", "--max-tokens", "2", "--greedy", "--threads", "1"]
        let run = try MarkedRun(ranks: 3, args)
        let seconds = run.finish(timeout: 60)
        #expect(seconds != nil)
        #expect(run.process.terminationStatus != 0)
        let why = reasonLines(run.text)
        #expect(why.contains("model-00003-of-00008.safetensors"), "\(damage): \(run.text)")
        #expect(why.contains(damage == "truncated shard" ? "truncated" : "overlap"), "\(damage): \(run.text)")
        print("FaultTable: generate | \(damage) | exit \(run.process.terminationStatus) after \(String(format: "%.2f", seconds ?? -1)) s | \(why) | left running: \(markedProcesses(run.marker).count)")
    }

    /// One rank (the last, as its own mpirun app) sees a different model directory: a shard it
    /// cannot read, or another model. That rank alone fails, and the job ends with its reason.
    @Test(arguments: ["unreadable shard", "another model"])
    func oneRankWithAnotherModelDirectory(_ difference: String) throws {
        try #require(MPI.available, "mpirun is missing")
        let dir = try CLI.scratchModel(difference == "unreadable shard" ? "sharded" : "interval2_qknorm")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = difference == "unreadable shard" ? CLI.models.appendingPathComponent("sharded").path : model
        if difference == "unreadable shard" {
            // As root nothing is unreadable by mode: a shard that is a dangling link fails the same way.
            let shard = dir.appendingPathComponent("model-00006-of-00008.safetensors")
            try FileManager.default.removeItem(at: shard)
            try FileManager.default.createSymbolicLink(atPath: shard.path, withDestinationPath: "/nonexistent/shard.safetensors")
        }
        let common = ["--prompt", "a b", "--max-tokens", "2", "--greedy", "--threads", "1"]
        let run = try MarkedRun(ranks: 2, ["generate", "--model", base] + common, mpmd: ["generate", "--model", dir.path] + common)
        let seconds = run.finish(timeout: 60)
        #expect(seconds != nil)
        #expect(run.process.terminationStatus != 0)
        let why = reasonLines(run.text)
        #expect(why.contains("rank 2"), "\(difference): \(run.text)")
        if difference == "unreadable shard" {
            #expect(why.contains("model-00006-of-00008.safetensors"), "\(run.text)")
        } else {
            #expect(why.contains("does not match"), "\(run.text)")
        }
        print("FaultTable: generate | \(difference) on rank 2 only | exit \(run.process.terminationStatus) after \(String(format: "%.2f", seconds ?? -1)) s | \(why) | left running: \(markedProcesses(run.marker).count)")
    }

    /// The supervised server: the rank gets the signal in `phase` (idle, or a stream in flight,
    /// or the first launch's load); the service comes back by itself.
    @Test(arguments: FaultCase.all(phases: ["load", "idle", "decode"], ranks: [0, 2]))
    func supervisedServerWithADeadOrStoppedRank(_ fault: FaultCase) throws {
        try #require(MPI.available, "mpirun is missing")
        var environment = ["FLAMINGO_LINK_DELAY_US": "20000"]
        if fault.phase == "load" { environment["FLAMINGO_FAULT_HOLD"] = "load:\(fault.rank):4000" }
        let supervisor = try SupervisorProcess(["--np", "3", "--model", model, "--threads", "1", "--peer-timeout", "3",
                                                "--max-completion-tokens", "240"], environment: environment)
        let chat = "\(supervisor.base)/v1/chat/completions"
        var stream: BackgroundRequest? = nil
        switch fault.phase {
        case "load":
            let deadline = Date().addingTimeInterval(60)
            while !supervisor.errorOutput.contains("holds in load") && Date() < deadline { usleep(20_000) }
        case "idle":
            #expect(supervisor.waitForHealth(200, timeout: 120))
        default:
            #expect(supervisor.waitForHealth(200, timeout: 120))
            stream = try BackgroundRequest(url: chat, body: #"{"messages":[{"role":"user","content":"a b c"}],"max_tokens":200,"stream":true}"#)
            #expect(stream!.wait(for: #""content":"#, timeout: 60))
        }
        let pid = try #require(supervisor.children.first { $0.rank == fault.rank }?.pid, "no rank \(fault.rank)")
        let signalled = Date()
        kill(pid, fault.signal)
        var streamEnded = "-"
        if let stream {
            let ended = stream.finish(timeout: 60)
            #expect(ended != nil, "the stream hung")
            #expect(stream.text.contains(#""error""#), "no error event: \(stream.text.suffix(400))")
            streamEnded = String(format: "stream ended with an error event %.2f s after the signal", Date().timeIntervalSince(signalled))
        }
        // Back by itself.
        let deadline = Date().addingTimeInterval(120)
        var restarts = 0
        while Date() < deadline {
            let (status, body) = (try? CLI.get("\(supervisor.base)/health")) ?? (0, "")
            if status == 200, let r = body.range(of: #""restarts":(\d+)"#, options: .regularExpression),
               let n = Int(body[r].split(separator: ":").last!), n >= 1 { restarts = n; break }
            usleep(100_000)
        }
        let back = Date().timeIntervalSince(signalled)
        #expect(restarts >= 1, "\(fault.testDescription): not back within 120 s: \(supervisor.errorOutput.suffix(1500))")
        let answer = try CLI.run(["-s", "-H", "Content-Type: application/json", chat,
                                  "-d", #"{"messages":[{"role":"user","content":"a"}],"max_tokens":2}"#], executable: "/usr/bin/curl")
        #expect(answer.stdout.contains(#""chat.completion""#), "after the restart: \(answer.stdout)")
        let why = supervisor.errorOutput.split(separator: "\n").last { $0.contains("pipeline down:") || $0.contains("pipeline stuck:") }
            .map { String($0.split(separator: "]").last ?? "").trimmingCharacters(in: .whitespaces) } ?? "?"
        #expect(supervisor.terminate() == 0)
        usleep(500_000)
        let left = supervisor.children
        #expect(left.isEmpty, "left running: \(left)")
        print("FaultTable: serve --supervise | \(fault.testDescription) | \(streamEnded) | serving again after \(String(format: "%.2f", back)) s | \(why) | left running: \(left.count)")
    }
}

extension ServeTests {
    /// A client that goes away mid-stream (SIGKILL of curl): every rank drops the sequence, the
    /// slot frees, and the server goes on serving.
    @Test func aClientThatDisconnectsMidStreamFreesItsSequence() throws {
        try #require(MPI.available, "mpirun is missing")
        let server = try ServeProcess(["--model", model, "--threads", "1", "--max-completion-tokens", "240"],
                                      environment: ["FLAMINGO_LINK_DELAY_US": "20000"], ranks: 3)
        let chat = "http://127.0.0.1:\(server.port)/v1/chat/completions"
        let stream = try BackgroundRequest(url: chat, body: #"{"messages":[{"role":"user","content":"a b c"}],"max_tokens":200,"stream":true}"#)
        #expect(stream.wait(for: #""content":"#, timeout: 60))
        #expect(try CLI.get("http://127.0.0.1:\(server.port)/metrics").1.contains("flamingo_active_sequences 1.0"))
        kill(stream.process.processIdentifier, SIGKILL)
        let gone = Date()
        var freed: Double? = nil
        while Date().timeIntervalSince(gone) < 30 {
            if try CLI.get("http://127.0.0.1:\(server.port)/metrics").1.contains("flamingo_active_sequences 0.0") {
                freed = Date().timeIntervalSince(gone)
                break
            }
            usleep(50_000)
        }
        #expect(freed != nil, "the sequence stayed active 30 s after its client went away")
        let answer = try CLI.run(["-s", "-H", "Content-Type: application/json", chat,
                                  "-d", #"{"messages":[{"role":"user","content":"a"}],"max_tokens":2}"#], executable: "/usr/bin/curl")
        #expect(answer.stdout.contains(#""chat.completion""#), "\(answer.stdout)")
        #expect(server.terminate() == 0)
        print("FaultTable: serve (mpirun -np 3) | client SIGKILLed mid-stream | sequence cancelled (flamingo_active_sequences 0) after \(String(format: "%.2f", freed ?? -1)) s | next request answered | left running: \(server.rankZero == nil ? 0 : 1)")
    }
}
