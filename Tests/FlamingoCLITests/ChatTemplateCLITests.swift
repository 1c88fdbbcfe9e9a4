import Foundation
import Testing

// `flamingo chat-template`: the prompt as the server builds it, compared with jinja2's golden render.

private let templates = CLI.fixtures.appendingPathComponent("chat-templates")

private func golden(_ model: String, _ name: String) throws -> String {
    let goldens = try JSONSerialization.jsonObject(with: Data(contentsOf: templates.appendingPathComponent("\(model)/goldens.json"))) as! [String: Any]
    return try #require((goldens[name] as? [String: Any])?["prompt"] as? String)
}

@Test(arguments: ["several-images", "multi-turn-parts", "no-generation-prompt", "image-url-then-text"])
func chatTemplateCommandPrintsJinja2sRender(name: String) throws {
    let r = try CLI.run(["chat-template", "--model", templates.appendingPathComponent("idefics2-8b").path,
                         "--messages", templates.appendingPathComponent("cases/\(name).json").path])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(Array(r.stdout.utf8) == Array(try golden("idefics2-8b", name).utf8))
}

@Test func chatTemplateCommandTakesATemplateFile() throws {
    let r = try CLI.run(["chat-template", "--model", CLI.models.appendingPathComponent("interval1").path,
                         "--messages", templates.appendingPathComponent("cases/several-images.json").path,
                         "--template", templates.appendingPathComponent("idefics-instruct-builtin/chat_template.jinja").path])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stdout == (try golden("idefics-instruct-builtin", "several-images")))
}

/// Runs chat-template and checks the failure is one clean line mentioning `expected`.
private func expectCleanFailure(_ arguments: [String], mentions expected: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let r = try CLI.run(["chat-template"] + arguments)
    #expect(!r.crashed, "crashed: \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.status == 1, "exit status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderrLines.count == 1, "expected one error line, got:\n\(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.hasPrefix("error: "), "\(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.contains(expected), "'\(expected)' not in: \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stdout.isEmpty, sourceLocation: sourceLocation)
}

@Test func chatTemplateCommandRefusesABadTemplate() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flamingo-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let bad = dir.appendingPathComponent("bad.jinja")
    try Data("{% for m in messages %}\n{{ m['content'] }}\n{% macro shout(x) %}{{ x | upper }}{% endmacro %}\n{% endfor %}".utf8).write(to: bad)
    try expectCleanFailure(["--model", templates.appendingPathComponent("idefics2-8b").path,
                            "--messages", templates.appendingPathComponent("cases/user-text.json").path, "--template", bad.path],
                           mentions: "chat_template: unsupported tag 'macro' at line 3")
}

@Test func chatTemplateCommandReportsRaiseExceptionAndBadInput() throws {
    let llama = templates.appendingPathComponent("llama-3.2-11b-vision-instruct").path
    try expectCleanFailure(["--model", llama, "--messages", templates.appendingPathComponent("cases/system-with-image.json").path],
                           mentions: "Prompting with images is incompatible with system messages.")
    try expectCleanFailure(["--model", llama, "--messages", "/nonexistent/messages.json"], mentions: "cannot read /nonexistent/messages.json")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flamingo-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let notJSON = dir.appendingPathComponent("m.json")
    try Data("{\"messages\": [".utf8).write(to: notJSON)
    try expectCleanFailure(["--model", llama, "--messages", notJSON.path], mentions: "is not JSON")
}
