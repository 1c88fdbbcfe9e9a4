import FlamingoCore
import Foundation

/// A `POST /v1/chat/completions` body, checked field by field. Only what the server uses is kept;
/// fields it cannot honour (n > 1, tools, logprobs, penalties, ...) are refused rather than ignored.
/// Unknown fields are ignored.
public struct ChatCompletionRequest: Sendable, Equatable {
    public enum Role: String, Sendable, Equatable {
        case system, developer, user, assistant
    }

    /// One piece of a message's content, in order.
    public enum Part: Sendable, Equatable {
        case text(String)
        /// An `image_url` part: `param` is its path in the request, for error messages.
        case image(url: String, param: String)
    }

    public struct Message: Sendable, Equatable {
        public var role: Role
        public var parts: [Part]
        public init(role: Role, parts: [Part]) {
            self.role = role
            self.parts = parts
        }

        /// The message as OpenAI's JSON, content as a list of parts.
        public var json: JSON {
            .object([
                ("role", .string(role.rawValue)),
                ("content", .array(parts.map { part in
                    switch part {
                    case .text(let text): .object([("type", .string("text")), ("text", .string(text))])
                    case .image(let url, _): .object([("type", .string("image_url")), ("image_url", .object([("url", .string(url))]))])
                    }
                })),
            ])
        }
    }

    public var model: String?
    public var messages: [Message]
    /// The messages exactly as sent (JSON objects), for a model's own chat template, which sees
    /// what transformers would: string content stays a string, empty text parts stay, and any
    /// other member of a message is there too. `messages` and this list hold the same images in
    /// the same order.
    public var templateMessages: [JSON]
    /// `max_completion_tokens`, else `max_tokens`; nil: as many as the limits allow.
    public var maxTokens: Int?
    /// nil: OpenAI's default, 1.
    public var temperature: Double?
    /// nil: OpenAI's default, 1.
    public var topP: Double?
    public var seed: Int64?
    /// Stop sequences in the generated text (empty: none).
    public var stop: [String]
    public var stream: Bool
    /// `stream_options.include_usage`.
    public var includeUsage: Bool

    /// Most stop sequences a request may give.
    public static let maxStopSequences = 16

    /// - Parameter templateMessages: the messages as a client would send them; nil: built from
    ///   `messages` (content as a list of parts).
    public init(model: String? = nil, messages: [Message], templateMessages: [JSON]? = nil, maxTokens: Int? = nil,
                temperature: Double? = nil, topP: Double? = nil, seed: Int64? = nil, stop: [String] = [],
                stream: Bool = false, includeUsage: Bool = false) {
        self.model = model
        self.messages = messages
        self.templateMessages = templateMessages ?? messages.map(\.json)
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
        self.stop = stop
        self.stream = stream
        self.includeUsage = includeUsage
    }

    /// Parses and checks a request body.
    /// - Throws: `APIError` (400) naming the field at fault.
    public init(body: Data) throws {
        let json: JSON
        do {
            json = try JSON.parse(body, maxDepth: Self.maxNesting)
        } catch {
            throw APIError.invalidJSON(error.offset == nil && body.isEmpty ? "the body is empty" : error.description)
        }
        try self.init(json: json)
    }

    /// Deepest nesting a request body may have (a bound on the parser's recursion).
    public static let maxNesting = 128

    public init(json: JSON) throws {
        guard case .object = json else {
            throw APIError(status: .badRequest, message: "The request body must be a JSON object, not \(json.typeName).",
                           code: "invalid_type")
        }
        let fields = Fields(json)
        model = try fields.string("model")

        guard let rawMessages = fields["messages"] else { throw APIError.missing("messages") }
        guard case .array(let list) = rawMessages else {
            throw APIError.invalidType("messages", expected: "an array", got: rawMessages)
        }
        guard !list.isEmpty else {
            throw APIError(status: .badRequest,
                           message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                           param: "messages", code: "empty_array")
        }
        messages = try list.enumerated().map { try Self.message($1, param: "messages[\($0)]") }
        templateMessages = list

        let maxCompletion = try fields.integer("max_completion_tokens")
        let maxTokensField = try fields.integer("max_tokens")
        maxTokens = maxCompletion ?? maxTokensField
        if let n = maxTokens, n < 1 {
            throw APIError.invalidValue(maxCompletion != nil ? "max_completion_tokens" : "max_tokens",
                                        "expected an integer of at least 1, but got \(n) instead.")
        }
        temperature = try fields.number("temperature")
        if let t = temperature, !(0...2).contains(t) {
            throw APIError.invalidValue("temperature", "expected a number from 0 to 2, but got \(t) instead.")
        }
        topP = try fields.number("top_p")
        if let p = topP, !(0...1).contains(p) {
            throw APIError.invalidValue("top_p", "expected a number from 0 to 1, but got \(p) instead.")
        }
        seed = try fields.integer64("seed")
        stop = try Self.stopSequences(fields["stop"])
        stream = try fields.bool("stream") ?? false
        includeUsage = false
        if let options = fields["stream_options"], !options.isNull {
            guard case .object = options else {
                throw APIError.invalidType("stream_options", expected: "an object", got: options)
            }
            guard stream else {
                throw APIError.invalidValue("stream_options", "only allowed when 'stream' is true.")
            }
            includeUsage = try Fields(options, prefix: "stream_options.").bool("include_usage") ?? false
        }
        try Self.refuseUnsupported(fields)
    }

    // MARK: - Pieces

    private static func message(_ json: JSON, param: String) throws -> Message {
        guard case .object = json else { throw APIError.invalidType(param, expected: "an object", got: json) }
        let fields = Fields(json, prefix: param + ".")
        guard let roleName = try fields.string("role") else { throw APIError.missing(param + ".role") }
        guard let role = Role(rawValue: roleName) else {
            throw APIError.invalidValue(param + ".role",
                                        "'\(roleName)' is not supported. Supported values are: 'system', 'developer', 'user' and 'assistant'.")
        }
        let contentParam = param + ".content"
        guard let content = fields["content"] else { throw APIError.missing(contentParam) }
        var parts: [Part]
        switch content {
        case .string(let text):
            parts = [.text(text)]
        case .array(let list):
            parts = try list.enumerated().map { try Self.part($1, param: "\(contentParam)[\($0)]") }
        case .null:
            throw APIError.unsupported(contentParam, "Messages without content (tool calls) are not supported.")
        default:
            throw APIError.invalidType(contentParam, expected: "a string or an array of content parts", got: content)
        }
        if role != .user, let index = parts.firstIndex(where: { if case .image = $0 { true } else { false } }) {
            throw APIError.invalidValue("\(contentParam)[\(index)]",
                                        "image_url parts are only supported in messages with role 'user'.")
        }
        for case .text(let text) in parts where text.contains("<image>") {
            throw APIError.invalidValue(contentParam, "text may not contain '<image>'; send images as image_url parts.")
        }
        parts.removeAll { $0 == .text("") }
        return Message(role: role, parts: parts)
    }

    private static func part(_ json: JSON, param: String) throws -> Part {
        guard case .object = json else { throw APIError.invalidType(param, expected: "an object", got: json) }
        let fields = Fields(json, prefix: param + ".")
        guard let type = try fields.string("type") else { throw APIError.missing(param + ".type") }
        switch type {
        case "text":
            guard let text = try fields.string("text") else { throw APIError.missing(param + ".text") }
            return .text(text)
        case "image_url":
            let urlParam = param + ".image_url"
            guard let image = fields["image_url"] else { throw APIError.missing(urlParam) }
            switch image {
            case .string(let url):
                // Not OpenAI's shape, but some clients send it.
                return .image(url: url, param: urlParam)
            case .object:
                guard let url = try Fields(image, prefix: urlParam + ".").string("url") else {
                    throw APIError.missing(urlParam + ".url")
                }
                return .image(url: url, param: urlParam + ".url")
            default:
                throw APIError.invalidType(urlParam, expected: "an object", got: image)
            }
        default:
            throw APIError.invalidValue(param + ".type",
                                        "'\(type)' is not supported. Supported values are: 'text' and 'image_url'.")
        }
    }

    private static func stopSequences(_ json: JSON?) throws -> [String] {
        let list: [String]
        switch json {
        case nil, .null?: return []
        case .string(let s)?: list = [s]
        case .array(let elements)?:
            list = try elements.enumerated().map { i, e in
                guard case .string(let s) = e else { throw APIError.invalidType("stop[\(i)]", expected: "a string", got: e) }
                return s
            }
        case let other?: throw APIError.invalidType("stop", expected: "a string or an array of strings", got: other)
        }
        if list.count > maxStopSequences {
            throw APIError.invalidValue("stop", "at most \(maxStopSequences) stop sequences are supported, got \(list.count).")
        }
        if list.contains("") { throw APIError.invalidValue("stop", "stop sequences may not be empty.") }
        return list
    }

    /// Parameters whose meaning the server cannot honour: refused, so that a client never
    /// silently gets something other than what it asked for. Their neutral values are accepted.
    private static func refuseUnsupported(_ fields: Fields) throws {
        if let n = try fields.integer("n"), n != 1 {
            throw APIError.unsupported("n", "Only n = 1 is supported.")
        }
        if try fields.bool("logprobs") == true {
            throw APIError.unsupported("logprobs", "logprobs are not supported.")
        }
        if let top = fields["top_logprobs"], !top.isNull {
            throw APIError.unsupported("top_logprobs", "logprobs are not supported.")
        }
        for name in ["frequency_penalty", "presence_penalty"] {
            if let value = try fields.number(name), value != 0 {
                throw APIError.unsupported(name, "\(name) is not supported.")
            }
        }
        for name in ["tools", "functions"] {
            if case .array(let list)? = fields[name], !list.isEmpty {
                throw APIError.unsupported(name, "Tool and function calling are not supported.")
            }
        }
        if case .object(let bias)? = fields["logit_bias"], !bias.isEmpty {
            throw APIError.unsupported("logit_bias", "logit_bias is not supported.")
        }
        if let format = fields["response_format"], !format.isNull {
            guard case .object = format else {
                throw APIError.invalidType("response_format", expected: "an object", got: format)
            }
            let type = try Fields(format, prefix: "response_format.").string("type")
            if type != nil && type != "text" {
                throw APIError.unsupported("response_format", "Only response_format type 'text' is supported.")
            }
        }
    }
}

/// Typed access to an object's members with OpenAI-style errors. A member set to null counts as absent.
struct Fields {
    let json: JSON
    let prefix: String

    init(_ json: JSON, prefix: String = "") {
        self.json = json
        self.prefix = prefix
    }

    subscript(name: String) -> JSON? { json[name] }

    private func present(_ name: String) -> JSON? {
        guard let value = json[name], !value.isNull else { return nil }
        return value
    }

    func string(_ name: String) throws -> String? {
        guard let value = present(name) else { return nil }
        guard case .string(let s) = value else { throw APIError.invalidType(prefix + name, expected: "a string", got: value) }
        return s
    }

    func bool(_ name: String) throws -> Bool? {
        guard let value = present(name) else { return nil }
        guard case .bool(let b) = value else { throw APIError.invalidType(prefix + name, expected: "a boolean", got: value) }
        return b
    }

    func number(_ name: String) throws -> Double? {
        guard let value = present(name) else { return nil }
        switch value {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw APIError.invalidType(prefix + name, expected: "a number", got: value)
        }
    }

    func integer64(_ name: String) throws -> Int64? {
        guard let value = present(name) else { return nil }
        switch value {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 9.2e18: return Int64(d)
        default: throw APIError.invalidType(prefix + name, expected: "an integer", got: value)
        }
    }

    func integer(_ name: String) throws -> Int? {
        guard let value = try integer64(name) else { return nil }
        guard let i = Int(exactly: value) else {
            throw APIError.invalidValue(prefix + name, "\(value) is out of range.")
        }
        return i
    }
}
