import Foundation
import Testing

// `flamingo generate` end to end (prompt text → tokenizer → image files → preprocessing → model →
// sampling → JSON/npy) against the transformers goldens of every fixture.

struct GoldenCase: Decodable {
    let name: String
    let prompt: String
    let input_ids: [Int]
    let images: [String]
    let logits_npy: String
    let greedy_tokens: [Int]
}

struct GoldenFile: Decodable {
    let cases: [GoldenCase]
    let tolerance: Tolerance

    /// 1e-3 for f32 numerics; the fixture says how much more for bf16 activations.
    struct Tolerance: Decodable {
        let max_abs_logit_diff: Float?
        let f32_max_abs_logit_diff: Float?
        var logits: Float { max_abs_logit_diff ?? f32_max_abs_logit_diff ?? 1e-3 }
    }
}

func goldenFile(_ fixture: String) -> GoldenFile? {
    let dir = CLI.models.appendingPathComponent(fixture)
    guard let data = try? Data(contentsOf: dir.appendingPathComponent("golden.json")) else { return nil }
    return try? JSONDecoder().decode(GoldenFile.self, from: data)
}

/// Every case of every fixture (the goldens' pixels come from transformers' default torchvision
/// image backend, which our preprocessing follows exactly, resizes included).
func allCases() -> [(String, GoldenCase)] {
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: CLI.models.path)) ?? []).sorted()
    var result: [(String, GoldenCase)] = []
    for name in names {
        guard let golden = goldenFile(name) else { continue }
        for c in golden.cases {
            result.append((name, c))
        }
    }
    return result
}

/// The kernel levels this CPU can run (from /proc/cpuinfo, as the binary decides), and why the
/// others cannot.
func kernelLevelAvailability() -> [String: String?] {
    let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let line = info.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
    let flags = Set(line.split(separator: " ").map(String.init))
    let avx2: Set<String> = ["avx2", "fma", "f16c"]
    let avx512 = avx2.union(["avx512f", "avx512bw", "avx512vl", "avx512dq"])
    return [
        "portable": nil,
        "avx2": flags.isSuperset(of: avx2) ? nil : "CPU lacks \(avx2.subtracting(flags).sorted())",
        "avx512": flags.isSuperset(of: avx512) ? nil : "CPU lacks \(avx512.subtracting(flags).sorted())",
    ]
}

struct GenerateOutput: Decodable {
    let tokens: [Int]
    let text: String?
    let prompt_tokens: Int
    let finish_reason: String
}

func readNPY(_ url: URL) throws -> [Float] {
    let bytes = try Data(contentsOf: url)
    let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
    let start = 10 + headerLength
    return bytes.subdata(in: start..<bytes.count).withUnsafeBytes { raw in
        (0..<((bytes.count - start) / 4)).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian) }
    }
}

/// Text prompts with the best kernels; raw ids under every kernel level the CPU has (each level's
/// variants against the same goldens). A level the CPU lacks must be refused with a clear error.
@Test(arguments: [(false, "best"), (true, "portable"), (true, "avx2"), (true, "avx512")])
func generateMatchesGoldens(useInputIDs: Bool, kernels: String) throws {
    if let reason = kernelLevelAvailability()[kernels] ?? nil {
        print("FLAMINGO_KERNELS=\(kernels): skipped, \(reason); checking it is refused")
        let r = try CLI.run(["generate", "--input-ids", "1,2"], environment: ["FLAMINGO_KERNELS": kernels])
        #expect(r.status != 0 && r.stderr.contains("FLAMINGO_KERNELS=\(kernels)"), "\(r.stderr)")
        return
    }
    let cases = allCases()
    #expect(cases.count >= 30)
    for (fixture, c) in cases {
        let dir = CLI.models.appendingPathComponent(fixture)
        let logits = FileManager.default.temporaryDirectory.appendingPathComponent("logits-\(UUID().uuidString).npy")
        defer { try? FileManager.default.removeItem(at: logits) }
        var args = ["generate", "--model", dir.path, "--greedy", "--json", "--max-tokens", "\(c.greedy_tokens.count)",
                    "--dump-logits", logits.path, "--threads", "1"]
        args += useInputIDs ? ["--input-ids", c.input_ids.map(String.init).joined(separator: ",")] : ["--prompt", c.prompt]
        for image in c.images { args += ["--image", dir.appendingPathComponent(image).standardized.path] }
        let r = try CLI.run(args, environment: ["FLAMINGO_KERNELS": kernels])
        #expect(r.status == 0, "\(fixture)/\(c.name): \(r.stderr)")
        guard r.status == 0 else { continue }
        let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(r.stdout.utf8))
        #expect(out.tokens == c.greedy_tokens, "\(fixture)/\(c.name)")
        #expect(out.prompt_tokens == c.input_ids.count, "\(fixture)/\(c.name): prompt tokenized differently")
        let expected = try readNPY(dir.appendingPathComponent(c.logits_npy))
        let got = try readNPY(logits)
        #expect(got.count == expected.count)
        let diff = zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity
        let tolerance = goldenFile(fixture)?.tolerance.logits ?? 1e-3
        #expect(diff <= tolerance, "\(fixture)/\(c.name) [\(kernels)]: max |logit diff| \(diff)")
    }
}

@Test func infoDescribesModel() throws {
    let r = try CLI.run(["info", "--model", CLI.models.appendingPathComponent("sharded").path, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let info = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    #expect(info?["model_type"] as? String == "idefics")
    #expect((info?["tensors"] as? Int ?? 0) > 50)
}

/// `--requests FILE`: relative image paths are relative to the file, not the working directory.
@Test func requestsFileImagePathsAreRelativeToTheFile() throws {
    let (fixture, c) = try #require(allCases().first { $0.1.images.count == 1 })
    let dir = CLI.models.appendingPathComponent(fixture)
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("requests-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: work) }
    try FileManager.default.createDirectory(at: work.appendingPathComponent("img"), withIntermediateDirectories: true)
    try FileManager.default.copyItem(at: dir.appendingPathComponent(c.images[0]).standardized,
                                     to: work.appendingPathComponent("img/picture.png"))
    let line = try JSONSerialization.data(withJSONObject: [
        "input_ids": c.input_ids, "images": ["img/picture.png"], "max_tokens": c.greedy_tokens.count,
    ] as [String: Any])
    try line.write(to: work.appendingPathComponent("requests.jsonl"))
    let r = try CLI.run(["generate", "--model", dir.path, "--requests", work.appendingPathComponent("requests.jsonl").path,
                         "--json", "--threads", "1"])
    #expect(r.status == 0, "\(r.stderr)")
    let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(r.stdout.split(separator: "\n")[0].utf8))
    #expect(out.tokens == c.greedy_tokens)
}

/// The issue-11 interfaces on a real directory: `flamingo quantize --model IN --out OUT --dtype int8`
/// writes a directory that `generate`, `plan` and `bench` take like any other; bench JSON names the
/// kernel per dtype. (bench on a small-vocabulary model used to index past its embedding table.)
@Test func quantizedDirectoryWorksWithEveryCommand() throws {
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("quantize-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: work) }
    let demo = CLI.repo.appendingPathComponent("models/demo").path
    let out = work.appendingPathComponent("demo-int8").path
    let q = try CLI.run(["quantize", "--model", demo, "--out", out, "--dtype", "int8"])
    #expect(q.status == 0, "\(q.stderr)")
    #expect(q.stderr.contains("weight matrices in int8"))
    let again = try CLI.run(["quantize", "--model", demo, "--out", out, "--dtype", "int8"])
    #expect(again.status != 0 && again.stderr.hasPrefix("error: ") && again.stderr.contains("already exists"), "\(again.stderr)")

    let image = CLI.repo.appendingPathComponent("models/demo/examples").path
    let png = try #require(try FileManager.default.contentsOfDirectory(atPath: image).sorted().first { $0.hasSuffix(".png") })
    let prompt = ["--prompt", "<image>Question: what colour is the shape? Answer:", "--image", "\(image)/\(png)", "--greedy", "--json", "--max-tokens", "4"]
    let dense = try CLI.run(["generate", "--model", demo] + prompt)
    let int8 = try CLI.run(["generate", "--model", out] + prompt)
    let atLoad = try CLI.run(["generate", "--model", demo, "--quantize", "int8"] + prompt)
    #expect(dense.status == 0 && int8.status == 0 && atLoad.status == 0, "\(int8.stderr) \(atLoad.stderr)")
    // Quantizing at load and loading a quantized directory are the same numbers.
    #expect(int8.stdout == atLoad.stdout)
    let answer = try JSONDecoder().decode(GenerateOutput.self, from: Data(int8.stdout.utf8))
    let reference = try JSONDecoder().decode(GenerateOutput.self, from: Data(dense.stdout.utf8))
    print("demo int8: \(answer.text ?? "") (f32: \(reference.text ?? ""))")

    let plan = try CLI.run(["plan", "--model", out, "--ranks", "3", "--json"])
    #expect(plan.status == 0, "\(plan.stderr)")
    let bench = try CLI.run(["bench", "--model", out, "--prompt-tokens", "16", "--decode-tokens", "2", "--threads", "1"])
    #expect(bench.status == 0, "\(bench.stderr)")
    let json = try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any]
    #expect(json?["dtype"] as? String == "int8")
    #expect(Set((json?["kernels"] as? [String: String] ?? [:]).keys) == ["f32", "f16", "bf16", "q8"])
    for key in ["prefill_tokens_per_second", "decode_tokens_per_second", "decode_weight_gb_per_second", "machine_memory_read_gb_per_second"] {
        #expect(json?[key] is Double, "bench JSON lacks \(key)")
    }
}

/// int8 weights (`--quantize int8`) against the f32 transformers goldens: reports, per fixture, the
/// largest |logit difference| at the first generated position and how often the greedy first token
/// still agrees (int8 changes numerics by design, so this is a report, not a tolerance; DESIGN.md
/// and the issue notes carry the figures). Asserts only that every case runs and gives finite logits.
@Test func int8LogitErrorAgainstGoldensIsReported() throws {
    var byFixture: [String: (diff: Float, scale: Float, agree: Int, cases: Int)] = [:]
    for (fixture, c) in allCases() {
        let dir = CLI.models.appendingPathComponent(fixture)
        let logits = FileManager.default.temporaryDirectory.appendingPathComponent("logits-\(UUID().uuidString).npy")
        defer { try? FileManager.default.removeItem(at: logits) }
        var args = ["generate", "--model", dir.path, "--greedy", "--json", "--max-tokens", "1", "--quantize", "int8",
                    "--dump-logits", logits.path, "--threads", "1", "--input-ids", c.input_ids.map(String.init).joined(separator: ",")]
        for image in c.images { args += ["--image", dir.appendingPathComponent(image).standardized.path] }
        let r = try CLI.run(args)
        #expect(r.status == 0, "\(fixture)/\(c.name): \(r.stderr)")
        guard r.status == 0 else { continue }
        let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(r.stdout.utf8))
        let got = try readNPY(logits)
        let expected = Array(try readNPY(dir.appendingPathComponent(c.logits_npy)).prefix(got.count))
        #expect(got.count == expected.count && got.allSatisfy(\.isFinite), "\(fixture)/\(c.name)")
        let diff = zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity
        let scale = expected.map(abs).max() ?? 0
        var entry = byFixture[fixture] ?? (0, 0, 0, 0)
        entry.diff = max(entry.diff, diff)
        entry.scale = max(entry.scale, scale)
        entry.agree += out.tokens.first == c.greedy_tokens.first ? 1 : 0
        entry.cases += 1
        byFixture[fixture] = entry
    }
    #expect(!byFixture.isEmpty)
    for (fixture, e) in byFixture.sorted(by: { $0.key < $1.key }) {
        print(String(format: "int8 vs f32 goldens: %@: max |logit diff| %.4f (largest |logit| %.2f), greedy first token agrees %d/%d",
                     fixture as NSString, e.diff, e.scale, e.agree, e.cases))
    }
}
