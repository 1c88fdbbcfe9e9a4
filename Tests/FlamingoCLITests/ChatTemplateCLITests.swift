import FlamingoModel
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

/// POST a JSON body, outside the openai client; returns the status and the body.
private func post(_ url: String, _ body: Data) throws -> (Int, String) {
    let r = try CLI.run(["-c", """
        import sys, urllib.request, urllib.error
        req = urllib.request.Request(sys.argv[1], data=open(sys.argv[2], 'rb').read(), headers={'Content-Type': 'application/json'})
        try:
            r = urllib.request.urlopen(req, timeout=60); print(r.status); print(r.read().decode())
        except urllib.error.HTTPError as e:
            print(e.code); print(e.read().decode())
        """, url, try temporaryFile(body).path], executable: "/usr/bin/env", prepend: ["python3"])
    let lines = r.stdout.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
    return (Int(lines.first ?? "") ?? -1, lines.count > 1 ? String(lines[1]) : "")
}

private func temporaryFile(_ data: Data, extension ext: String = "json") throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("flamingo-test-\(UUID().uuidString).\(ext)")
    try data.write(to: url)
    return url
}

@Test func serveBuildsPromptsWithTheModelsOwnTemplate() throws {
    let dir = try CLI.scratchModel("interval1")
    defer { try? FileManager.default.removeItem(at: dir) }
    let config = try JSONSerialization.jsonObject(with: Data(contentsOf: templates.appendingPathComponent("idefics2-8b/chat_template.json"))) as! [String: Any]
    try Data((config["chat_template"] as! String).utf8).write(to: dir.appendingPathComponent("chat_template.jinja"))
    let server = try ServeProcess(["--model", dir.path, "--threads", "1"])
    let spec = try JSONSerialization.jsonObject(with: Data(contentsOf: templates.appendingPathComponent("cases/multi-turn-parts.json"))) as! [String: Any]
    let body = try JSONSerialization.data(withJSONObject: ["messages": spec["messages"]!, "max_tokens": 1, "temperature": 0])
    let (status, text) = try post(server.url + "/chat/completions", body)
    #expect(status == 200, "\(text)")
    let usage = try #require((try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["usage"] as? [String: Any])
    // The prompt the server tokenized is jinja2's render of the model's template.
    let expected = PromptBuilder(tokenizer: try Tokenizer(contentsOf: dir)).tokens(try golden("idefics2-8b", "multi-turn-parts")).count
    #expect(usage["prompt_tokens"] as? Int == expected)
    #expect(server.terminate() == 0, "\(server.errorOutput)")
}

@Test func serveRefusesABadTemplateFileBeforeLoading() throws {
    let bad = try temporaryFile(Data("ok\n{% macro m() %}{% endmacro %}".utf8), extension: "jinja")
    let r = try CLI.run(["serve", "--model", CLI.models.appendingPathComponent("interval1").path, "--port", "0",
                         "--chat-template", bad.path], timeout: 30)
    #expect(r.status != 0)
    #expect(!r.crashed)
    #expect(r.stderr.contains("unsupported tag 'macro' at line 2"), "\(r.stderr)")
}
