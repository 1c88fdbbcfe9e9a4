import FlamingoCore
import Foundation

/// Why a model's chat template cannot be used.
public enum ChatTemplateLoadError: Error, LocalizedError, Equatable {
    case unreadable(path: String, reason: String)
    case invalidFile(path: String, reason: String)
    /// The file has several named templates and none is called "default".
    case noDefault(path: String, names: [String])
    /// The template text does not load (syntax, or a construct outside the supported subset).
    case template(path: String, ChatTemplateError)

    public var errorDescription: String? {
        switch self {
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .invalidFile(let path, let reason): "\(path): \(reason)"
        case .noDefault(let path, let names):
            "\(path) has several chat templates (\(names.joined(separator: ", "))) and none is named 'default'"
        case .template(let path, let error): "\(error.errorDescription ?? "\(error)") (in \(path))"
        }
    }
}

/// A model's own Jinja chat template, rendered the way transformers' `apply_chat_template` renders
/// it (transformers/utils/chat_template_utils.py `render_jinja_template`, processing_utils.py):
///
/// - variables: `messages`, `add_generation_prompt`, `tools` and `documents` (both `None`), and the
///   special tokens `bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`,
///   `mask_token` that the tokenizer config sets (a string, or an AddedToken object's "content");
///   globals `raise_exception`, `namespace`, `strftime_now`, `dict`.
/// - messages as the processor normalises them: top-level keys whose value is null dropped, and
///   each OpenAI `{"type": "image_url", "image_url": {"url": U}}` part replaced by
///   `{"type": "image", "url": U}`. String content stays a string.
///
/// Where a model directory's template is found, first match wins (the processor's order, then the
/// tokenizer's): `processor_config.json` "chat_template", `chat_template.json` "chat_template",
/// `chat_template.jinja`, `tokenizer_config.json` "chat_template" (a string, or a list of
/// `{"name", "template"}` of which "default" is used).
public struct ModelChatTemplate: Sendable {
    public let template: JinjaTemplate
    /// The template's text.
    public let text: String
    /// Where it came from, e.g. `.../tokenizer_config.json (chat_template)`.
    public let origin: String
    /// Special-token variables, in transformers' order.
    public let specialTokens: [(name: String, value: String)]

    public static let specialTokenNames = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    /// A template from its text; `origin` names it in errors.
    public init(text: String, origin: String, specialTokens: [(name: String, value: String)]) throws(ChatTemplateLoadError) {
        do {
            template = try JinjaTemplate(text)
        } catch {
            throw .template(path: origin, error)
        }
        self.text = text
        self.origin = origin
        self.specialTokens = specialTokens
    }

    /// The template in `file` (`flamingo serve --chat-template FILE`): a Jinja file, or a JSON file
    /// with "chat_template" (chat_template.json, tokenizer_config.json); special tokens from the
    /// model `directory`.
    public init(contentsOf file: URL, modelDirectory directory: URL) throws(ChatTemplateLoadError) {
        try self.init(text: try Self.text(contentsOf: file), origin: file.path, specialTokens: try Self.specialTokens(in: directory))
    }

    /// The template text in `file`: the file itself, or its "chat_template" when it is JSON.
    public static func text(contentsOf file: URL) throws(ChatTemplateLoadError) -> String {
        let data = try read(file)
        if file.pathExtension.lowercased() == "json" {
            guard let text = try templateText(inJSON: data, path: file.path) else {
                throw .invalidFile(path: file.path, reason: "has no \"chat_template\"")
            }
            return text
        }
        guard let text = String(data: data, encoding: .utf8) else { throw .invalidFile(path: file.path, reason: "is not UTF-8 text") }
        return text
    }

    /// The model's own template, or nil when the directory has none.
    public static func find(in directory: URL) throws(ChatTemplateLoadError) -> ModelChatTemplate? {
        let fm = FileManager.default
        func file(_ name: String) -> URL? {
            let url = directory.appendingPathComponent(name)
            return fm.fileExists(atPath: url.path) ? url : nil
        }
        for name in ["processor_config.json", "chat_template.json"] {
            guard let url = file(name) else { continue }
            if let text = try templateText(inJSON: try read(url), path: url.path) {
                return try ModelChatTemplate(text: text, origin: url.path + " (chat_template)", specialTokens: try specialTokens(in: directory))
            }
        }
        if let url = file("chat_template.jinja") {
            return try ModelChatTemplate(text: try text(contentsOf: url), origin: url.path, specialTokens: try specialTokens(in: directory))
        }
        if let url = file("tokenizer_config.json"), let text = try templateText(inJSON: try read(url), path: url.path) {
            return try ModelChatTemplate(text: text, origin: url.path + " (chat_template)", specialTokens: try specialTokens(in: directory))
        }
        return nil
    }

    private static func read(_ url: URL) throws(ChatTemplateLoadError) -> Data {
        do {
            return try Data(contentsOf: url)
        } catch {
            throw .unreadable(path: url.path, reason: (error as NSError).localizedFailureReason ?? error.localizedDescription)
        }
    }

    private static func object(_ data: Data, path: String) throws(ChatTemplateLoadError) -> JSON {
        let json: JSON
        do {
            json = try JSON.parse(data)
        } catch {
            throw .invalidFile(path: path, reason: "not JSON: \(error.description)")
        }
        guard case .object = json else { throw .invalidFile(path: path, reason: "must be a JSON object") }
        return json
    }

    /// The "chat_template" member: a string, or the default of a list of named templates.
    private static func templateText(inJSON data: Data, path: String) throws(ChatTemplateLoadError) -> String? {
        switch try object(data, path: path)["chat_template"] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case .array(let list)?:
            var names: [String] = []
            for entry in list {
                guard case .string(let name)? = entry["name"], case .string(let text)? = entry["template"] else {
                    throw .invalidFile(path: path, reason: "chat_template list entries must be {\"name\": ..., \"template\": ...}")
                }
                if name == "default" { return text }
                names.append(name)
            }
            throw .noDefault(path: path, names: names)
        case let other?:
            throw .invalidFile(path: path, reason: "chat_template must be a string or a list of named templates, not \(other.typeName)")
        }
    }

    /// The special tokens tokenizer_config.json sets (special_tokens_map.json for those it does not).
    public static func specialTokens(in directory: URL) throws(ChatTemplateLoadError) -> [(name: String, value: String)] {
        var found: [String: String] = [:]
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            let json = try object(try read(url), path: url.path)
            for key in specialTokenNames {
                switch json[key] {
                case .string(let s)?: found[key] = s
                case .object?:
                    if case .string(let s)? = json[key]?["content"] { found[key] = s }
                default: break
                }
            }
        }
        return specialTokenNames.compactMap { name in found[name].map { (name, $0) } }
    }

    public var bosToken: String? { specialTokens.first { $0.name == "bos_token" }?.value }

    /// Renders `messages` (JSON objects, as a client sent them).
    /// - Parameters:
    ///   - now, timeZone: what `strftime_now` formats.
    /// - Throws: `ChatTemplateError` (`.raised` when the template calls `raise_exception`).
    public func render(messages: [JSON], addGenerationPrompt: Bool, now: Date = Date(),
                       timeZone: TimeZone = .current) throws(ChatTemplateError) -> String {
        var variables: [(String, JinjaValue)] = [
            ("messages", .list(messages.map(Self.normalized))),
            ("tools", .none),
            ("documents", .none),
            ("add_generation_prompt", .bool(addGenerationPrompt)),
        ]
        for (name, value) in specialTokens { variables.append((name, .string(value))) }
        return try template.render(variables: variables, now: now, timeZone: timeZone)
    }

    /// transformers' message normalisation (`_normalize_chat_messages`, the processor's image_url
    /// conversion).
    static func normalized(_ message: JSON) -> JinjaValue {
        guard case .object(let members) = message else { return JinjaValue(json: message) }
        var d = JinjaDict()
        for (key, value) in members where !value.isNull {
            if key == "content", case .array(let parts) = value {
                d[key] = .list(parts.map { part in
                    guard case .string("image_url")? = part["type"], let info = part["image_url"] else { return JinjaValue(json: part) }
                    let url: JinjaValue = info.objectMembers != nil ? (info["url"].map(JinjaValue.init(json:)) ?? .string("")) : JinjaValue(json: info)
                    return .dict(JinjaDict([("type", .string("image")), ("url", url)]))
                })
            } else {
                d[key] = JinjaValue(json: value)
            }
        }
        return .dict(d)
    }
}
