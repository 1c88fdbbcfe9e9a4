import FlamingoCore
import FlamingoModel
import FlamingoServer
import Foundation
import Testing

// The server's prompts with a model's own chat template: the template's render (checked against
// jinja2 in ChatTemplateJinjaTests) tokenized with its images placed, refusals as 400s.

/// A copy of the interval1 fixture's non-weight files, with `extra` files added.
private func servedModel(_ extra: [String: String]) throws -> ModelDirectory {
    var files = extra
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"] {
        files[name] = try String(contentsOf: Fixtures.models.appendingPathComponent("interval1/\(name)"), encoding: .utf8)
    }
    return try ModelDirectory(try scratchDirectory(files))
}

/// The case's messages as a request body, each image part an image_url part with a real image
/// (the templates do not print URLs, so the goldens still apply).
private func request(case name: String) throws -> ChatCompletionRequest {
    let spec = try ChatTemplateFixtures.json("cases/\(name).json")
    let image = JSON.object([("type", .string("image_url")), ("image_url", .object([("url", .string(try Fixtures.dataURL("circle.png")))]))])
    func swap(_ j: JSON) -> JSON {
        switch j {
        case .object(let m):
            if case .string(let type)? = j["type"], type == "image" || type == "image_url" { return image }
            return .object(m.map { ($0.key, swap($0.value)) })
        case .array(let a): return .array(a.map(swap))
        default: return j
        }
    }
    return try ChatCompletionRequest(json: .object([("messages", swap(try #require(spec["messages"])))]))
}

@Test func serverPromptsComeFromTheModelsTemplate() throws {
    let template = try ModelChatTemplate.text(contentsOf: ChatTemplateFixtures.root.appendingPathComponent("idefics2-8b/chat_template.json"))
    let directory = try servedModel(["chat_template.jinja": template])
    let builder = try ChatRequestBuilder(directory: directory, limits: ServerLimits(), allowLocalFiles: false)
    let tokenizer = try #require(directory.tokenizer)
    for name in ["several-images", "image-url-then-text", "multi-turn-parts"] {
        let golden = try #require(try ChatTemplateFixtures.json("idefics2-8b/goldens.json")[name]?["prompt"]?.stringValue)
        let prepared = try builder.prepare(try request(case: name))
        #expect(prepared.generation.promptTokens == PromptBuilder(tokenizer: tokenizer).tokens(golden), "\(name)")
        #expect(prepared.generation.images.count == golden.components(separatedBy: "<image>").count - 1)
    }
    // --chat-template plain still wins over the model's template.
    let plain = try ChatRequestBuilder(directory: directory, limits: ServerLimits(), allowLocalFiles: false, chatTemplate: .builtIn(.plain))
    let r = try request(case: "image-url-then-text")
    #expect(try plain.prepare(r).generation.promptTokens
        == PromptBuilder(tokenizer: tokenizer).tokens(ChatTemplate(style: .plain).render(r.messages).prompt))
}

@Test func aTemplateThatWritesItsOwnBOSGetsNoSecond() throws {
    let directory = try servedModel(["chat_template.jinja": "{{ bos_token }}{{ messages[0]['content'] }}"])
    let builder = try ChatRequestBuilder(directory: directory, limits: ServerLimits(), allowLocalFiles: false)
    let tokenizer = try #require(directory.tokenizer)
    let bos = try #require(tokenizer.bosTokenID)
    let tokens = try builder.prepare(ChatCompletionRequest(messages: [.init(role: .user, parts: [.text("hi")])],
                                                           templateMessages: [.object([("role", .string("user")), ("content", .string("hi"))])]))
        .generation.promptTokens
    #expect(tokens.first == bos)
    #expect(tokens.dropFirst().first != bos)
}

@Test func templateRefusalsAndImageMismatchesAreBadRequests() throws {
    let llama = ChatTemplateFixtures.root.appendingPathComponent("llama-3.2-11b-vision-instruct/tokenizer_config.json")
    let builder = try ChatRequestBuilder(directory: try servedModel([:]), limits: ServerLimits(), allowLocalFiles: false, chatTemplate: .file(llama))
    #expect { try builder.prepare(try request(case: "system-with-image")) } throws: {
        ($0 as? APIError)?.code == "chat_template_refused" && ($0 as? APIError)?.message.contains("incompatible with system messages") == true
    }
    // This template writes <|image|>, the model's image token is <image>: the images have no place.
    #expect { try builder.prepare(try request(case: "text-then-image")) } throws: { ($0 as? APIError)?.code == "chat_template_error" }
}

@Test func aBadTemplateFileFailsTheServerSetup() throws {
    let file = try scratchDirectory(["t.jinja": "ok\n{% filter upper %}x{% endfilter %}"]).appendingPathComponent("t.jinja")
    #expect(throws: ChatTemplateLoadError.template(path: file.path, .unsupported("tag 'filter'", line: 2))) {
        try ChatRequestBuilder(directory: try servedModel([:]), limits: ServerLimits(), allowLocalFiles: false, chatTemplate: .file(file))
    }
}
