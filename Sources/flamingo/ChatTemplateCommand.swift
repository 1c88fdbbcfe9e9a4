import ArgumentParser
import FlamingoCore
import FlamingoModel
import FlamingoServer
import Foundation

struct ChatTemplateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-template",
        abstract: "Print the prompt `flamingo serve` builds from chat messages (the model's chat_template, or a built-in style).",
        discussion: """
        --messages FILE.json: {"messages": [...], "add_generation_prompt": true|false} (default true, as the server). \
        Content is a string or a list of parts: {"type": "text", "text": ...}, {"type": "image"}, OpenAI's \
        {"type": "image_url", "image_url": {"url": ...}}. The prompt is printed as rendered, with no newline added; \
        images appear as the template writes them. Errors (bad input, a template that does not load, raise_exception) \
        are one line on stderr and exit code 1.
        """
    )

    @Option(help: "Model directory (default: $FLAMINGO_MODEL, else models/demo). Only its template and tokenizer files are read.")
    var model: String?

    @Option(help: "JSON file with \"messages\" and \"add_generation_prompt\".")
    var messages: String

    @Option(help: ArgumentHelp("Template instead of the model's own, as serve's --chat-template: idefics, plain, or a Jinja file.",
                               valueName: "idefics|plain|FILE"))
    var template: String?

    func run() async throws {
        try await failing {
            let directory = URL(fileURLWithPath: model ?? ProcessInfo.processInfo.environment["FLAMINGO_MODEL"] ?? "models/demo")
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("no model directory at \(directory.path)")
            }
            let (list, addGenerationPrompt) = try Self.readMessages(messages)
            let tokenizerURL = directory.appendingPathComponent("tokenizer.json")
            let tokenizer = FileManager.default.fileExists(atPath: tokenizerURL.path) ? try Tokenizer(contentsOf: tokenizerURL) : nil
            let prompt: String
            switch try PromptTemplate(ChatTemplateSelection(argument: template), directory: directory, tokenizer: tokenizer) {
            case .jinja(let t):
                prompt = try t.render(messages: list, addGenerationPrompt: addGenerationPrompt)
            case .builtIn(let t):
                prompt = t.render(try Self.builtInMessages(list, file: messages), addGenerationPrompt: addGenerationPrompt).prompt
            }
            FileHandle.standardOutput.write(Data(prompt.utf8))
        }
    }

    /// The messages (JSON objects) and add_generation_prompt of a messages file.
    static func readMessages(_ path: String) throws -> ([JSON], Bool) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ValidationError("cannot read \(path): \((error as NSError).localizedFailureReason ?? error.localizedDescription)")
        }
        let json: JSON
        do {
            json = try JSON.parse(data)
        } catch {
            throw ValidationError("\(path) is not JSON: \(error.description)")
        }
        guard case .object = json else { throw ValidationError("\(path) must be a JSON object with \"messages\"") }
        guard case .array(let list)? = json["messages"] else { throw ValidationError("\(path): \"messages\" must be an array") }
        guard !list.isEmpty else { throw ValidationError("\(path): \"messages\" is empty") }
        for (i, m) in list.enumerated() {
            guard case .object = m else { throw ValidationError("\(path): messages[\(i)] must be an object") }
        }
        var addGenerationPrompt = true
        switch json["add_generation_prompt"] {
        case nil, .null?: break
        case .bool(let b)?: addGenerationPrompt = b
        default: throw ValidationError("\(path): \"add_generation_prompt\" must be true or false")
        }
        return (list, addGenerationPrompt)
    }

    /// The messages as the built-in styles take them (the server's parts: text, and images in order).
    static func builtInMessages(_ list: [JSON], file: String) throws -> [ChatCompletionRequest.Message] {
        try list.enumerated().map { i, m in
            let at = "\(file): messages[\(i)]"
            guard case .string(let roleName)? = m["role"], let role = ChatCompletionRequest.Role(rawValue: roleName) else {
                throw ValidationError("\(at).role must be one of system, developer, user, assistant")
            }
            switch m["content"] {
            case .string(let text)?:
                return .init(role: role, parts: [.text(text)])
            case .array(let parts)?:
                return .init(role: role, parts: try parts.enumerated().map { j, part in
                    switch part["type"] {
                    case .string("text")?:
                        guard case .string(let text)? = part["text"] else { throw ValidationError("\(at).content[\(j)].text must be a string") }
                        return .text(text)
                    case .string("image")?:
                        return .image(url: part["url"]?.stringValue ?? "", param: "messages[\(i)].content[\(j)]")
                    case .string("image_url")?:
                        let url = part["image_url"]?.stringValue ?? part["image_url"]?["url"]?.stringValue ?? ""
                        return .image(url: url, param: "messages[\(i)].content[\(j)]")
                    default:
                        throw ValidationError("\(at).content[\(j)].type must be text, image or image_url")
                    }
                })
            default:
                throw ValidationError("\(at).content must be a string or a list of parts")
            }
        }
    }
}
