import Foundation
import Testing

// The real binary under a real mpirun, 1 to 5 ranks (DESIGN.md §8): the pipeline must give the
// goldens' tokens and logits bit-identical to one process.

enum MPI {
    static var environment: [String: String] { ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"] }

    /// `mpirun --oversubscribe -np N flamingo <arguments>`.
    static func run(ranks: Int, _ arguments: [String], extraEnvironment: [String: String] = [:], timeout: TimeInterval = 180) throws -> CLI.Result {
        var env = environment
        for (k, v) in extraEnvironment { env[k] = v }
        let forwarded = extraEnvironment.keys.flatMap { ["-x", $0] }
        return try CLI.run(["--oversubscribe", "-np", "\(ranks)"] + forwarded + ["--", CLI.binary] + arguments,
                           environment: env, timeout: timeout, executable: "/usr/bin/mpirun")
    }

    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun") }
}

private func tempPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
}

/// A requests file with every golden case of a fixture.
private func requestsFile(fixture: String, cases: [GoldenCase], maxTokens: Int? = nil, ignoreEOS: Bool = false) throws -> String {
    let dir = CLI.models.appendingPathComponent(fixture)
    let lines = try cases.map { c -> String in
        let object: [String: Any] = ["input_ids": c.input_ids,
                                     "images": c.images.map { dir.appendingPathComponent($0).standardized.path },
                                     "max_tokens": maxTokens ?? c.greedy_tokens.count, "ignore_eos": ignoreEOS]
        return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }
    let path = tempPath("requests") + ".jsonl"
    try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

private func goldenCases(_ fixture: String) throws -> [GoldenCase] {
    try JSONDecoder().decode(GoldenFile.self, from: Data(contentsOf: CLI.models.appendingPathComponent(fixture).appendingPathComponent("golden.json"))).cases
}

private var fixtureNames: [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: CLI.models.path)) ?? [])
        .filter { FileManager.default.fileExists(atPath: CLI.models.appendingPathComponent($0).appendingPathComponent("golden.json").path) }
        .sorted()
}

@Test(.enabled(if: MPI.available), arguments: fixtureNames)
func pipelineOverOneToFiveRanksEqualsOneProcess(fixture: String) throws {
    let cases = try goldenCases(fixture)
    let requests = try requestsFile(fixture: fixture, cases: cases)
    defer { try? FileManager.default.removeItem(atPath: requests) }
    let model = CLI.models.appendingPathComponent(fixture).path
    let args = ["generate", "--model", model, "--requests", requests, "--greedy"]

    // The reference: one process, no mpirun.
    let referenceLogits = tempPath("logits") + ".npy"
    defer { try? FileManager.default.removeItem(atPath: referenceLogits) }
    let reference = try CLI.run(args + ["--dump-logits", referenceLogits, "--threads", "1"])
    #expect(reference.status == 0, "\(reference.stderr)")
    let referenceLines = reference.stdout.split(separator: "\n")
    let expectedLogits = try Data(contentsOf: URL(fileURLWithPath: referenceLogits))
    // It agrees with transformers.
    for (line, c) in zip(referenceLines, cases) {
        let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(line.utf8))
        #expect(out.tokens == c.greedy_tokens, "\(fixture)/\(c.name)")
    }

    for ranks in 1...5 {
        let logits = tempPath("logits") + ".npy"
        defer { try? FileManager.default.removeItem(atPath: logits) }
        let r = try MPI.run(ranks: ranks, args + ["--dump-logits", logits])
        #expect(r.status == 0, "\(fixture) -np \(ranks): \(r.stderr)")
        guard r.status == 0 else { continue }
        #expect(r.stdout.split(separator: "\n") == referenceLines, "\(fixture) -np \(ranks): tokens differ from one process")
        let got = try Data(contentsOf: URL(fileURLWithPath: logits))
        #expect(got == expectedLogits, "\(fixture) -np \(ranks): logits are not bit-identical to one process")
    }
}

/// Every kernel level the CPU has (each family's variants, int8 weights included) keeps the
/// pipeline bit-identical to one process under the same level. A level the CPU lacks is skipped
/// with the reason printed (generateMatchesGoldens checks it is refused).
@Test(.enabled(if: MPI.available), arguments: ["portable", "avx2", "avx512"])
func pipelineIsBitIdenticalUnderEveryKernelLevel(kernels: String) throws {
    if let reason = kernelLevelAvailability()[kernels] ?? nil {
        print("FLAMINGO_KERNELS=\(kernels): skipped, \(reason)")
        return
    }
    let env = ["FLAMINGO_KERNELS": kernels]
    for (fixture, extra) in [("bf16", []), ("bf16", ["--quantize", "int8"]), ("interval2_qknorm", [])] {
        let cases = try goldenCases(fixture)
        let requests = try requestsFile(fixture: fixture, cases: cases)
        defer { try? FileManager.default.removeItem(atPath: requests) }
        let args = ["generate", "--model", CLI.models.appendingPathComponent(fixture).path, "--requests", requests, "--greedy"] + extra
        let what = "\(fixture) \(extra.joined(separator: " ")) [\(kernels)]"
        let referenceLogits = tempPath("logits") + ".npy", logits = tempPath("logits") + ".npy"
        defer { try? FileManager.default.removeItem(atPath: referenceLogits); try? FileManager.default.removeItem(atPath: logits) }
        let reference = try CLI.run(args + ["--dump-logits", referenceLogits, "--threads", "2"], environment: env)
        #expect(reference.status == 0, "\(what): \(reference.stderr)")
        let r = try MPI.run(ranks: 3, args + ["--dump-logits", logits], extraEnvironment: env)
        #expect(r.status == 0, "\(what) -np 3: \(r.stderr)")
        guard reference.status == 0, r.status == 0 else { continue }
        #expect(r.stdout == reference.stdout, "\(what) -np 3: tokens differ from one process")
        #expect(try Data(contentsOf: URL(fileURLWithPath: logits)) == Data(contentsOf: URL(fileURLWithPath: referenceLogits)),
                "\(what) -np 3: logits are not bit-identical to one process")
    }
}

@Test(.enabled(if: MPI.available))
func visionOnItsOwnRankGivesTheSameAnswer() throws {
    let fixture = "interval2_qknorm"
    let cases = try goldenCases(fixture)
    let requests = try requestsFile(fixture: fixture, cases: cases)
    defer { try? FileManager.default.removeItem(atPath: requests) }
    let args = ["generate", "--model", CLI.models.appendingPathComponent(fixture).path, "--requests", requests]
    let single = try CLI.run(args + ["--threads", "1"])
    let split = try MPI.run(ranks: 4, args + ["--vision-own-rank"])
    #expect(split.status == 0, "\(split.stderr)")
    #expect(split.stdout == single.stdout)
}

@Test(.enabled(if: MPI.available))
func badInputUnderMPIEndsEveryRank() throws {
    let started = Date()
    let r = try MPI.run(ranks: 3, ["generate", "--model", CLI.models.appendingPathComponent("interval1").path,
                                   "--prompt", "<image>hi", "--image", "/nonexistent.png"], timeout: 60)
    #expect(r.status != 0)
    #expect(!r.crashed)
    #expect(r.stderr.contains("error: "))
    #expect(r.stderr.contains("nonexistent.png"))
    #expect(Date().timeIntervalSince(started) < 30)
}

/// PIDs of this test's flamingo processes, by MPI rank (found through a marker in their environment).
private func flamingoProcesses(marker: String) -> [Int: Int32] {
    var result: [Int: Int32] = [:]
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry),
              let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
        let vars = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard vars.contains("FLAMINGO_TEST_MARKER=\(marker)"),
              let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
              String(decoding: cmdline, as: UTF8.self).contains("flamingo"),
              !String(decoding: cmdline, as: UTF8.self).hasPrefix("/usr/bin/mpirun"),
              let rankVar = vars.first(where: { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }),
              let rank = Int(rankVar.dropFirst("OMPI_COMM_WORLD_RANK=".count)) else { continue }
        result[rank] = pid
    }
    return result
}

/// Starts a long generation on 3 ranks, does `act` to rank 2 once all ranks are up, and checks
/// the job ends within 30 s naming rank 2, leaving no process behind.
private func disruptRankTwo(signal: Int32) throws {
    let fixture = "interval1"
    let cases = try goldenCases(fixture)
    // One request at a time, 200 tokens each (the fixture has 256 positions): tens of seconds of work.
    let requests = try requestsFile(fixture: fixture, cases: Array(repeating: cases[0], count: 40), maxTokens: 200, ignoreEOS: true)
    defer { try? FileManager.default.removeItem(atPath: requests) }
    let marker = UUID().uuidString
    let outcome = UncheckedBox<CLI.Result?>(nil)
    let done = DispatchSemaphore(value: 0)
    let started = UncheckedBox(Date())
    Thread.detachNewThread {
        outcome.value = try? MPI.run(ranks: 3, ["generate", "--model", CLI.models.appendingPathComponent(fixture).path,
                                                "--requests", requests, "--threads", "1", "--batch-size", "1",
                                                "--microbatches", "1"],
                                     extraEnvironment: ["FLAMINGO_TEST_MARKER": marker], timeout: 120)
        done.signal()
    }
    // Wait until the three ranks exist and have had time to start generating.
    var pids: [Int: Int32] = [:]
    let deadline = Date().addingTimeInterval(60)
    while pids.count < 3 && Date() < deadline {
        usleep(100_000)
        pids = flamingoProcesses(marker: marker)
    }
    #expect(pids.count == 3, "ranks never started: \(pids)")
    sleep(2)
    guard let victim = pids[2] else { done.wait(); return }
    started.value = Date()
    kill(victim, signal)
    let finished = done.wait(timeout: .now() + 60) == .success
    let elapsed = Date().timeIntervalSince(started.value)
    #expect(finished, "the job did not end after rank 2 was disrupted")
    #expect(elapsed < 30, "the job took \(elapsed) s to end")
    if signal == SIGSTOP { kill(victim, SIGKILL) }
    guard let r = outcome.value else { return }
    #expect(r.status != 0)
    let output = r.stdout + r.stderr
    #expect(output.contains("rank 2"), "no mention of rank 2 in:\n\(output)")
    // Nothing left running.
    usleep(500_000)
    #expect(flamingoProcesses(marker: marker).isEmpty, "processes left: \(flamingoProcesses(marker: marker))")
}

@Test(.enabled(if: MPI.available))
func killedRankEndsTheJobAndIsNamed() throws {
    try disruptRankTwo(signal: SIGKILL)
}

@Test(.enabled(if: MPI.available))
func stalledRankEndsTheJobAndIsNamed() throws {
    try disruptRankTwo(signal: SIGSTOP)
}

@Test(.enabled(if: MPI.available))
func rankMemoryStaysWithinItsShard() throws {
    // A synthetic checkpoint of ~1.5 GB over 4 ranks: each LM rank may hold its own weights, its
    // caches and a fixed overhead for the runtime (Swift, Open MPI, OpenBLAS buffers), no more.
    let overhead = 160 << 20
    let dir = tempPath("synth")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let synth = try CLI.run(["synth", "--preset", "bench-1b", "--layers", "8", "--dtype", "bf16",
                             "--shard-size", "256MiB", "--out", dir], timeout: 300)
    #expect(synth.status == 0, "\(synth.stderr)")
    let stats = tempPath("stats") + ".json"
    defer { try? FileManager.default.removeItem(atPath: stats) }
    let r = try MPI.run(ranks: 4, ["generate", "--model", dir, "--input-ids", "1,5,32001,7,8,9,10,11,12",
                                   "--image", CLI.models.appendingPathComponent("images/circle.png").path,
                                   "--max-tokens", "8", "--stats-json", stats], timeout: 300)
    #expect(r.status == 0, "\(r.stderr)")
    let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: stats))) as? [String: Any]
    let ranks = object?["ranks"] as? [[String: Any]] ?? []
    #expect(ranks.count == 4)
    var totalWeights = 0
    for rank in ranks {
        let weights = (rank["weight_bytes"] as? Int) ?? 0
        let caches = (rank["peak_cache_bytes"] as? Int) ?? 0
        let peak = (rank["peak_rss_bytes"] as? Int) ?? Int.max
        totalWeights += weights
        print("rank \(rank["rank"] ?? "?"): weights \(weights >> 20) MiB, caches \(caches >> 10) KiB, peak RSS \(peak >> 20) MiB")
        #expect(peak <= weights + caches + overhead, "rank \(rank["rank"] ?? "?") peaked at \(peak >> 20) MiB")
    }
    // Every rank mapped only its part: together they hold the model once.
    #expect(totalWeights > 1_300_000_000 && totalWeights < 1_600_000_000, "\(totalWeights)")
}

/// Whether this machine lets us make network namespaces (root, iproute2, a kernel that allows it).
private let netnsUnavailableReason: String? = {
    guard getuid() == 0 else { return "not root" }
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") else {
        return "no ip command (iproute2)"
    }
    let probe = "flprobe\(getpid())"
    guard let add = try? CLI.run(["netns", "add", probe], executable: "/usr/sbin/ip"), add.status == 0 else {
        return "ip netns add is not permitted here"
    }
    _ = try? CLI.run(["netns", "del", probe], executable: "/usr/sbin/ip")
    return nil
}()

@Test(.enabled(if: MPI.available))
func threeHostsOverTCPBetweenNetworkNamespaces() throws {
    if let reason = netnsUnavailableReason {
        print("skipping the multi-host test: \(reason)")
        return
    }
    let fixture = "interval2_qknorm"
    let c = try goldenCases(fixture)[1]
    let dir = CLI.models.appendingPathComponent(fixture)
    var args = ["generate", "--model", dir.path, "--input-ids", c.input_ids.map(String.init).joined(separator: ","),
                "--greedy", "--json", "--max-tokens", "\(c.greedy_tokens.count)"]
    for image in c.images { args += ["--image", dir.appendingPathComponent(image).standardized.path] }
    let single = try CLI.run(args + ["--threads", "1"])
    #expect(single.status == 0)
    let script = CLI.repo.appendingPathComponent("cluster/netns-launch.sh").path
    var env = MPI.environment
    env["OPENBLAS_CORETYPE"] = "Haswell"
    let r = try CLI.run(["3", "--", CLI.binary] + args, environment: env, timeout: 180, executable: script)
    #expect(r.status == 0, "\(r.stderr)")
    let lastLine = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
    #expect(lastLine == single.stdout.trimmingCharacters(in: .newlines), "3 hosts: \(r.stdout)\n\(r.stderr)")
    let multi = try JSONDecoder().decode(GenerateOutput.self, from: Data(lastLine.utf8))
    #expect(multi.tokens == c.greedy_tokens)
}

@Test(.enabled(if: MPI.available))
func demoModelAnswersUnderThreeRanksLikePyTorch() throws {
    // models/demo on the fixed 50-case held-out subset, pipelined over 3 ranks: >= 90% exact match
    // on the colour/shape/count questions, and every prediction equal to PyTorch's.
    let cases = CLI.repo.appendingPathComponent("Tests/Fixtures/demo-eval/subset50.jsonl").path
    let r = try MPI.run(ranks: 3, ["eval", "--model", CLI.repo.appendingPathComponent("models/demo").path,
                                   "--cases", cases, "--json"], timeout: 300)
    #expect(r.status == 0, "\(r.stderr)")
    let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    let tasks = out?["tasks"] as? [String: [String: Any]] ?? [:]
    var right = 0, total = 0
    for task in ["colour", "shape", "count"] {
        right += tasks[task]?["correct"] as? Int ?? 0
        total += tasks[task]?["cases"] as? Int ?? 0
    }
    #expect(total >= 25)
    #expect(Double(right) >= 0.9 * Double(total), "colour/shape/count: \(right)/\(total)")
    #expect(out?["agree_with_reference"] as? Int == out?["with_reference"] as? Int, "predictions differ from PyTorch's")
    #expect(out?["with_reference"] as? Int == 50)
}

// MARK: - Tensor-parallel stages

/// TP-only (one stage of 2 ranks) and PP×TP (two stages of 2) against one process: the same greedy
/// tokens, logits within 1e-4 (a split layer adds its partial sums in another order than one
/// matmul), and bit-identical across two runs of the same layout (partials added in group order).
@Test(.enabled(if: MPI.available), arguments: fixtureNames)
func tensorParallelStagesEqualOneProcess(fixture: String) throws {
    let cases = try goldenCases(fixture)
    let requests = try requestsFile(fixture: fixture, cases: cases)
    defer { try? FileManager.default.removeItem(atPath: requests) }
    let args = ["generate", "--model", CLI.models.appendingPathComponent(fixture).path, "--requests", requests, "--greedy"]
    let referenceLogits = tempPath("logits") + ".npy"
    defer { try? FileManager.default.removeItem(atPath: referenceLogits) }
    let reference = try CLI.run(args + ["--dump-logits", referenceLogits])
    #expect(reference.status == 0, "\(reference.stderr)")
    let expected = try readNPY(URL(fileURLWithPath: referenceLogits))

    for (ranks, repeatRun) in [(3, true), (5, false)] {
        var firstRun: Data?
        for run in 0..<(repeatRun ? 2 : 1) {
            let logits = tempPath("logits") + ".npy"
            defer { try? FileManager.default.removeItem(atPath: logits) }
            let r = try MPI.run(ranks: ranks, args + ["--tp", "2", "--dump-logits", logits])
            let what = "\(fixture) -np \(ranks) --tp 2"
            #expect(r.status == 0, "\(what): \(r.stderr)")
            guard r.status == 0 else { continue }
            #expect(r.stdout.split(separator: "\n") == reference.stdout.split(separator: "\n"), "\(what): tokens differ from one process")
            let got = try readNPY(URL(fileURLWithPath: logits))
            #expect(got.count == expected.count)
            let worst = zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-4, "\(what): logits differ from one process by up to \(worst)")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: logits))
            if run == 0 { firstRun = bytes } else { #expect(bytes == firstRun, "\(what): two runs of the same layout differ") }
        }
    }
}

@Test(.enabled(if: MPI.available))
func aTensorParallelLayoutThatDoesNotDivideIsRefused() throws {
    let model = CLI.models.appendingPathComponent("interval1").path
    // 4 LM ranks do not make stages of 3.
    let uneven = try MPI.run(ranks: 5, ["generate", "--model", model, "--input-ids", "1,5,6", "--tp", "3"])
    #expect(uneven.status != 0)
    #expect(uneven.stderr.contains("--tp 3 needs the LM ranks"), "\(uneven.stderr)")
    // 4 heads do not split over 3 ranks.
    let heads = try MPI.run(ranks: 4, ["generate", "--model", model, "--input-ids", "1,5,6", "--tp", "3"])
    #expect(heads.status != 0)
    #expect(heads.stderr.contains("do not split over 3 ranks"), "\(heads.stderr)")
}

// MARK: - The scaling sweep, smoke configuration

/// `scripts/scaling/sweep --smoke`: real runs over netns hosts with a shaped link, the simulator
/// on each, a CSV and the PNG plots. Checks that it all runs and writes sane rows (not the
/// simulator's accuracy: that is timing, reported by the full sweep in docs/scaling.md).
@Test(.enabled(if: MPI.available))
func scalingSweepSmokeWritesItsTableAndPlots() throws {
    if let reason = netnsUnavailableReason {
        print("skipping the scaling sweep smoke run: \(reason)")
        return
    }
    let out = tempPath("sweep")
    defer { try? FileManager.default.removeItem(atPath: out) }
    var env = MPI.environment
    env["FLAMINGO_BIN"] = CLI.binary
    env["OPENBLAS_CORETYPE"] = "Haswell"
    let script = CLI.repo.appendingPathComponent("scripts/scaling/sweep").path
    let r = try CLI.run(["--smoke", "--out", out], environment: env, timeout: 600, executable: script)
    #expect(r.status == 0, "\(r.stderr)")
    guard r.status == 0 else { return }
    let rows = try String(contentsOfFile: out + "/smoke-sweep.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
    #expect(rows.count == 4, "header and 3 points: \(rows)")
    let header = rows[0]
    for row in rows.dropFirst() {
        #expect(row.count == header.count)
        func value(_ name: String) -> Double { Double(row[header.firstIndex(of: name)!]) ?? .nan }
        for name in ["measured_tokens_per_second", "simulated_tokens_per_second", "measured_per_token_seconds",
                     "simulated_per_token_seconds", "measured_ttft_seconds", "simulated_ttft_seconds"] {
            #expect(value(name) > 0 && value(name).isFinite, "\(name) in \(row)")
        }
        for name in ["measured_bubble", "simulated_bubble"] { #expect((0...1).contains(value(name)), "\(name) in \(row)") }
    }
    #expect(Set(rows.dropFirst().map { $0[1] }) == ["single", "pp", "tp"])
    for plot in ["throughput-vs-ranks", "latency-vs-ranks", "bubble-vs-microbatches", "measured-vs-predicted"] {
        let data = FileManager.default.contents(atPath: "\(out)/smoke-\(plot).png") ?? Data()
        #expect(data.starts(with: [0x89, 0x50, 0x4E, 0x47]), "\(plot).png is not a PNG")
    }
    #expect(r.stderr.contains("simulator throughput error over 3 measured points"))
}
