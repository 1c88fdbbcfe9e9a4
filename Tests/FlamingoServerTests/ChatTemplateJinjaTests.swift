import FlamingoCore
import FlamingoModel
import FlamingoServer
import Foundation
import Testing

// Our Jinja subset against jinja2 as transformers runs it: every render in Tests/Fixtures/chat-templates
// (made by scripts/reference/make_chat_template_goldens.py) must come out byte for byte the same.

enum ChatTemplateFixtures {
    static let root = Fixtures.repo.appendingPathComponent("Tests/Fixtures/chat-templates")
    static let models = ["idefics2-8b", "llama-3.2-11b-vision-instruct", "idefics-instruct-builtin"]
    /// The golden script's FIXED_NOW, 2024-09-25 12:00 UTC, for strftime_now.
    static let now = Date(timeIntervalSince1970: 1_727_265_600)
    static let utc = TimeZone(identifier: "UTC")!

    static func json(_ path: String) throws -> JSON {
        try JSON.parse(Data(contentsOf: root.appendingPathComponent(path)))
    }

    /// The cases/*.json names.
    static func caseNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("cases").path)
            .filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }
}

@Test func interpreterMatchesJinja2OnEveryCase() throws {
    guard case .array(let cases) = try ChatTemplateFixtures.json("interpreter.json") else { Issue.record("interpreter.json is not a list"); return }
    #expect(cases.count >= 40)
    for entry in cases {
        let name = entry["name"]?.stringValue ?? "?"
        let source = try #require(entry["template"]?.stringValue, "\(name)")
        let context = entry["context"]?.objectMembers ?? []
        let template = try JinjaTemplate(source)
        let rendered = Result { () throws(ChatTemplateError) in
            try template.render(context, now: ChatTemplateFixtures.now, timeZone: ChatTemplateFixtures.utc)
        }
        if let expected = entry["prompt"]?.stringValue {
            switch rendered {
            case .success(let text): #expect(Array(text.utf8) == Array(expected.utf8), "\(name): got \(text.debugDescription), jinja2 \(expected.debugDescription)")
            case .failure(let error): Issue.record("\(name): \(error.localizedDescription), jinja2 rendered \(expected.debugDescription)")
            }
        } else {
            let message = entry["error"]?.stringValue ?? ""
            switch rendered {
            case .success(let text): Issue.record("\(name): rendered \(text.debugDescription), jinja2 failed with \(message)")
            case .failure(let error):
                if entry["raised"]?.boolValue == true {
                    #expect(error == .raised(message), "\(name)")
                } else if case .render = error {
                } else {
                    Issue.record("\(name): \(error), expected a render error like jinja2's \(message)")
                }
            }
        }
    }
}

@Test(arguments: ChatTemplateFixtures.models)
func modelTemplateMatchesJinja2(model: String) throws {
    let template = try #require(try ModelChatTemplate.find(in: ChatTemplateFixtures.root.appendingPathComponent(model)))
    let goldens = try ChatTemplateFixtures.json("\(model)/goldens.json")
    let names = try ChatTemplateFixtures.caseNames()
    #expect(names.count >= 10)
    for name in names {
        let spec = try ChatTemplateFixtures.json("cases/\(name).json")
        let messages = try #require(spec["messages"]?.arrayValue)
        let golden = try #require(goldens[name], "\(model)/\(name) has no golden")
        let rendered = Result { () throws(ChatTemplateError) in
            try template.render(messages: messages, addGenerationPrompt: spec["add_generation_prompt"]?.boolValue ?? true,
                                now: ChatTemplateFixtures.now, timeZone: ChatTemplateFixtures.utc)
        }
        switch (rendered, golden["prompt"]?.stringValue) {
        case (.success(let text), let expected?):
            #expect(Array(text.utf8) == Array(expected.utf8), "\(model)/\(name): got \(text.debugDescription), jinja2 \(expected.debugDescription)")
        case (.failure(let error), nil):
            if golden["raised"]?.boolValue == true {
                #expect(error == .raised(golden["error"]?.stringValue ?? ""), "\(model)/\(name)")
            } else if case .render = error {
            } else {
                Issue.record("\(model)/\(name): \(error), expected a render error")
            }
        case (.success(let text), nil):
            Issue.record("\(model)/\(name): rendered \(text.debugDescription), jinja2 failed with \(golden["error"]?.stringValue ?? "")")
        case (.failure(let error), _?):
            Issue.record("\(model)/\(name): \(error.localizedDescription)")
        }
    }
}

/// The built-in `idefics` style and its Jinja formulation agree (and so, through the goldens, with jinja2).
@Test func builtInIdeficsStyleEqualsItsJinjaForm() throws {
    let goldens = try ChatTemplateFixtures.json("idefics-instruct-builtin/goldens.json")
    let style = ChatTemplate(style: .idefics, endOfUtterance: ChatTemplate.endOfUtteranceToken)
    for name in try ChatTemplateFixtures.caseNames() {
        let spec = try ChatTemplateFixtures.json("cases/\(name).json")
        let messages = try #require(spec["messages"]?.arrayValue).map { m -> ChatCompletionRequest.Message in
            let role = ChatCompletionRequest.Role(rawValue: m["role"]?.stringValue ?? "") ?? .user
            switch m["content"] {
            case .string(let s)?: return .init(role: role, parts: [.text(s)])
            case .array(let parts)?:
                return .init(role: role, parts: parts.map { $0["type"]?.stringValue == "text" ? .text($0["text"]?.stringValue ?? "") : .image(url: "", param: "") })
            default: return .init(role: role, parts: [])
            }
        }
        let expected = try #require(goldens[name]?["prompt"]?.stringValue, "\(name)")
        #expect(style.render(messages, addGenerationPrompt: spec["add_generation_prompt"]?.boolValue ?? true).prompt == expected, "\(name)")
    }
}

// MARK: - Interpreter units

private func render(_ source: String, _ context: [(key: String, value: JSON)] = []) throws -> String {
    try JinjaTemplate(source).render(context, now: ChatTemplateFixtures.now, timeZone: ChatTemplateFixtures.utc)
}

@Test func whitespaceControlAndBlockTrimming() throws {
    // trim_blocks drops the newline after a tag, lstrip_blocks the indentation before one; '-' strips all whitespace.
    #expect(try render("{% for x in [1, 2] %}\n  {{ x }}\n{% endfor %}\n") == "  1\n  2\n")
    #expect(try render("a \n {{- 'b' -}} \n c") == "abc")
    #expect(try render("  {%- if true %} x {% endif -%}  \ny") == " x y")
}

@Test func loopVariablesAndElifChains() throws {
    let t = "{% for x in xs %}{% if loop.first %}[{% elif loop.last %}]{% elif x == 'b' %}b{% else %}?{% endif %}{{ loop.index0 }}/{{ loop.length }}{% endfor %}"
    #expect(try render(t, [("xs", .array([.string("a"), .string("b"), .string("c"), .string("d")]))]) == "[0/4b1/4?2/4]3/4")
}

@Test func undefinedValuesRenderEmptyAndAreFalsy() throws {
    #expect(try render("[{{ nope }}]{% if nope %}t{% else %}f{% endif %}{{ nope is defined }}{{ nope | default('d') }}") == "[]fFalsed")
    // Using an attribute of an undefined value is an error, as in Jinja.
    #expect(throws: ChatTemplateError.render("'nope' is undefined", line: 1)) { try render("{{ nope.x }}") }
}

@Test func raiseExceptionCarriesItsMessage() throws {
    #expect(throws: ChatTemplateError.raised("Conversation roles must alternate user/assistant/user/assistant/...")) {
        try render("{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}")
    }
}

@Test(arguments: [
    ("{% for m in messages %}\n{{ m }}\n{% macro f() %}x{% endmacro %}{% endfor %}", "tag 'macro'", 3),
    ("{% include 'other.jinja' %}", "tag 'include'", 1),
    ("{% extends 'base' %}", "tag 'extends'", 1),
    ("line 1\n{% raw %}{{ x }}{% endraw %}", "tag 'raw'", 2),
    ("{{ x | wordwrap(10) }}", "filter 'wordwrap'", 1),
    ("{% if x is escaped %}{% endif %}", "test 'escaped'", 1),
    ("\n\n\n{{ lipsum(2) }}", "function 'lipsum'", 4),
    ("{{ messages.append(1) }}", "method 'append'", 1),
    ("{% for x in y recursive %}{% endfor %}", "recursive loop", 1),
    ("{{ f(*args) }}", "function 'f'", 1),
])
func unsupportedConstructsFailAtLoadNamingThem(source: String, construct: String, line: Int) {
    #expect(throws: ChatTemplateError.unsupported(construct, line: line)) { try JinjaTemplate(source) }
}

@Test func unsupportedConstructMessageNamesTheLine() {
    let error = ChatTemplateError.unsupported("tag 'macro'", line: 3)
    #expect(error.errorDescription == "chat_template: unsupported tag 'macro' at line 3")
}

@Test(arguments: ["{% if x %}no end", "{{ x ", "{% for %}{% endfor %}", "{{ 'unterminated }}", "{# open", "{% endif %}", "{{ (1, 2] }}"])
func syntaxErrorsFailAtLoad(source: String) {
    #expect {
        try JinjaTemplate(source)
    } throws: { error in
        if case .syntax? = error as? ChatTemplateError { return true }
        return false
    }
}

// MARK: - Finding a model's template

func scratchDirectory(_ files: [String: String]) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chat-template-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    for (name, text) in files { try Data(text.utf8).write(to: dir.appendingPathComponent(name)) }
    return dir
}

@Test func theModelsTemplateIsFoundAsTransformersFindsIt() throws {
    // A list of named templates: "default" is used.
    let named = try scratchDirectory(["tokenizer_config.json": #"{"bos_token": "<s>", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}]}"#])
    let t = try #require(try ModelChatTemplate.find(in: named))
    #expect(try t.render(messages: [], addGenerationPrompt: true) == "D<s>")
    // chat_template.jinja comes before tokenizer_config.json, chat_template.json before both.
    let files = try scratchDirectory(["tokenizer_config.json": #"{"chat_template": "config"}"#, "chat_template.jinja": "jinja\n"])
    #expect(try ModelChatTemplate.find(in: files)?.render(messages: [], addGenerationPrompt: true) == "jinja")
    try Data(#"{"chat_template": "legacy json"}"#.utf8).write(to: files.appendingPathComponent("chat_template.json"))
    #expect(try ModelChatTemplate.find(in: files)?.render(messages: [], addGenerationPrompt: true) == "legacy json")
    // No template: nil (the built-in style is used).
    #expect(try ModelChatTemplate.find(in: try scratchDirectory(["tokenizer_config.json": #"{"bos_token": "<s>"}"#])) == nil)
}

@Test func specialTokensAreStringsOrAddedTokenContents() throws {
    let tokens = try ModelChatTemplate.specialTokens(in: ChatTemplateFixtures.root.appendingPathComponent("llama-3.2-11b-vision-instruct"))
    #expect(tokens.map(\.name) == ["bos_token", "eos_token"])
    #expect(tokens.map(\.value) == ["<|begin_of_text|>", "<|eot_id|>"])
}

@Test func badTemplatesFailToLoadNamingTheFile() throws {
    let noDefault = try scratchDirectory(["tokenizer_config.json": #"{"chat_template": [{"name": "a", "template": "x"}]}"#])
    #expect(throws: ChatTemplateLoadError.noDefault(path: noDefault.appendingPathComponent("tokenizer_config.json").path, names: ["a"])) {
        try ModelChatTemplate.find(in: noDefault)
    }
    let macro = try scratchDirectory(["chat_template.jinja": "{% macro m() %}{% endmacro %}"])
    do {
        _ = try ModelChatTemplate.find(in: macro)
        Issue.record("a macro loaded")
    } catch {
        #expect(error == .template(path: macro.appendingPathComponent("chat_template.jinja").path, .unsupported("tag 'macro'", line: 1)))
        #expect(error.errorDescription?.hasPrefix("chat_template: unsupported tag 'macro' at line 1 (in ") == true)
    }
}
