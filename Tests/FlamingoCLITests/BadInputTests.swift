import Foundation
import Testing

// Bad input: one clear error line on stderr, a non-zero exit, never a crash.

private let fixture = "interval1"
private var fixtureDir: String { CLI.models.appendingPathComponent(fixture).path }
private var image: String { CLI.models.appendingPathComponent("images/circle.png").path }

/// Runs generate with `arguments` and checks the failure is clean and mentions `expected`.
private func expectCleanFailure(_ arguments: [String], mentions expected: String,
                                sourceLocation: SourceLocation = #_sourceLocation) throws {
    let r = try CLI.run(["generate"] + arguments + ["--threads", "1"])
    #expect(!r.crashed, "crashed: \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.status != 0, "exit status 0 for bad input", sourceLocation: sourceLocation)
    #expect(r.stderrLines.count == 1, "expected one error line, got:\n\(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.hasPrefix("error: "), "\(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.localizedCaseInsensitiveContains(expected), "'\(expected)' not in: \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stdout.isEmpty, sourceLocation: sourceLocation)
}

@Test func missingModelDirectory() throws {
    try expectCleanFailure(["--model", "/nonexistent/model", "--input-ids", "1,2"], mentions: "does not exist")
}

@Test func unknownModelType() throws {
    let dir = try CLI.scratchModel(fixture)
    defer { try? FileManager.default.removeItem(at: dir) }
    let url = dir.appendingPathComponent("config.json")
    var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    config["model_type"] = "gpt2"
    try JSONSerialization.data(withJSONObject: config).write(to: url)
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "unknown model_type 'gpt2'")
}

private func damagedCheckpoint(_ damage: (inout SafetensorsEditor) -> Void) throws -> URL {
    let dir = try CLI.scratchModel(fixture)
    let file = dir.appendingPathComponent("model.safetensors")
    var editor = try SafetensorsEditor(file)
    damage(&editor)
    try editor.write(file)
    return dir
}

@Test func safetensorsBadHeader() throws {
    let dir = try CLI.scratchModel(fixture)
    defer { try? FileManager.default.removeItem(at: dir) }
    let file = dir.appendingPathComponent("model.safetensors")
    var bytes = try Data(contentsOf: file)
    bytes.replaceSubrange(8..<20, with: Data("{not json!!!".utf8))
    try bytes.write(to: file)
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "bad safetensors header")
    // A header length pointing past the end of the file.
    bytes.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
    try bytes.write(to: file)
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "header length")
}

@Test func safetensorsTruncatedData() throws {
    let dir = try CLI.scratchModel(fixture)
    defer { try? FileManager.default.removeItem(at: dir) }
    let file = dir.appendingPathComponent("model.safetensors")
    let bytes = try Data(contentsOf: file)
    try bytes.prefix(bytes.count * 2 / 3).write(to: file)
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "truncated")
}

@Test func safetensorsMissingTensor() throws {
    let dir = try damagedCheckpoint { $0.header["model.layers.1.mlp.up_proj.weight"] = nil }
    defer { try? FileManager.default.removeItem(at: dir) }
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "missing tensor 'model.layers.1.mlp.up_proj.weight'")
}

@Test func safetensorsWrongShape() throws {
    let dir = try damagedCheckpoint { e in
        e.edit("model.layers.0.mlp.down_proj.weight") { entry in
            let shape = entry["shape"] as! [Int]
            entry["shape"] = [shape[1], shape[0]]
        }
    }
    defer { try? FileManager.default.removeItem(at: dir) }
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "'model.layers.0.mlp.down_proj.weight' has wrong shape")
}

@Test func safetensorsUnknownDType() throws {
    let dir = try damagedCheckpoint { e in e.edit("model.norm.weight") { $0["dtype"] = "Q7" } }
    defer { try? FileManager.default.removeItem(at: dir) }
    try expectCleanFailure(["--model", dir.path, "--input-ids", "1,2"], mentions: "unsupported dtype 'Q7'")
}

@Test func imageThatIsNotAnImage() throws {
    let bogus = FileManager.default.temporaryDirectory.appendingPathComponent("not-an-image-\(UUID().uuidString).png")
    try Data("this is text, not a PNG".utf8).write(to: bogus)
    defer { try? FileManager.default.removeItem(at: bogus) }
    try expectCleanFailure(["--model", fixtureDir, "--prompt", "<image>hi", "--image", bogus.path], mentions: "not an image")
    try expectCleanFailure(["--model", fixtureDir, "--prompt", "<image>hi", "--image", "/nonexistent.png"], mentions: "nonexistent.png")
}

@Test func moreImageMarkersThanImages() throws {
    try expectCleanFailure(["--model", fixtureDir, "--prompt", "<image>a<image>b", "--image", image],
                           mentions: "2 image marker(s) but 1 image(s)")
}

@Test func fewerImageMarkersThanImages() throws {
    try expectCleanFailure(["--model", fixtureDir, "--prompt", "<image>a", "--image", image, "--image", image],
                           mentions: "1 image marker(s) but 2 image(s)")
    try expectCleanFailure(["--model", fixtureDir, "--input-ids", "1,5,6", "--image", image],
                           mentions: "0 image marker(s) but 1 image(s)")
}

@Test func tokenIDsOutOfRange() throws {
    try expectCleanFailure(["--model", fixtureDir, "--input-ids", "1,99999"], mentions: "token id 99999 is out of range")
    try expectCleanFailure(["--model", fixtureDir, "--input-ids", "1,-4"], mentions: "token id -4 is out of range")
    try expectCleanFailure(["--model", fixtureDir, "--input-ids", "1,x"], mentions: "'x' is not an integer")
}

@Test(arguments: ["0", "-3"])
func maxTokensNotPositive(value: String) throws {
    try expectCleanFailure(["--model", fixtureDir, "--input-ids", "1,2", "--max-tokens", value],
                           mentions: "max tokens must be at least 1, got \(value)")
}
