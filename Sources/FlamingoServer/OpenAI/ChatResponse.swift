import FlamingoCore
import FlamingoModel
import Foundation

/// The JSON objects of chat completion responses, field for field as OpenAI sends them.
public struct ChatResponseFormat: Sendable {
    /// "chatcmpl-..." (the same in every chunk of a stream).
    public let id: String
    /// Unix seconds.
    public let created: Int
    public let model: String

    public init(id: String = ChatResponseFormat.newID(), created: Int = Int(Date().timeIntervalSince1970), model: String) {
        self.id = id
        self.created = created
        self.model = model
    }

    public static func newID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        return "chatcmpl-" + String((0..<24).map { _ in alphabet.randomElement()! })
    }

    public static func usage(prompt: Int, completion: Int) -> JSON {
        .object([("prompt_tokens", JSON(prompt)), ("completion_tokens", JSON(completion)),
                 ("total_tokens", JSON(prompt + completion))])
    }

    /// A non-streamed answer (`object: chat.completion`).
    public func completion(text: String, finishReason: FinishReason, promptTokens: Int, completionTokens: Int) -> JSON {
        .object([
            ("id", .string(id)), ("object", "chat.completion"), ("created", JSON(created)), ("model", .string(model)),
            ("choices", [.object([
                ("index", 0),
                ("message", .object([("role", "assistant"), ("content", .string(text)), ("refusal", nil)])),
                ("logprobs", nil),
                ("finish_reason", .string(finishReason.rawValue)),
            ])]),
            ("usage", Self.usage(prompt: promptTokens, completion: completionTokens)),
        ])
    }

    /// One streamed chunk (`object: chat.completion.chunk`) with one choice. With `include_usage`,
    /// every chunk carries `"usage": null` and a last chunk (`usageChunk`) the totals.
    public func chunk(delta: JSON, finishReason: FinishReason? = nil, includeUsage: Bool) -> JSON {
        var members: [(String, JSON)] = [
            ("id", .string(id)), ("object", "chat.completion.chunk"), ("created", JSON(created)), ("model", .string(model)),
            ("choices", [.object([
                ("index", 0), ("delta", delta), ("logprobs", nil), ("finish_reason", JSON(finishReason?.rawValue)),
            ])]),
        ]
        if includeUsage { members.append(("usage", nil)) }
        return .object(members)
    }

    /// The first chunk: the role.
    public func roleChunk(includeUsage: Bool) -> JSON {
        chunk(delta: .object([("role", "assistant"), ("content", ""), ("refusal", nil)]), includeUsage: includeUsage)
    }

    public func contentChunk(_ text: String, includeUsage: Bool) -> JSON {
        chunk(delta: .object([("content", .string(text))]), includeUsage: includeUsage)
    }

    public func finishChunk(_ reason: FinishReason, includeUsage: Bool) -> JSON {
        chunk(delta: .object([]), finishReason: reason, includeUsage: includeUsage)
    }

    /// After the finish chunk, when `stream_options.include_usage`: no choices, the usage.
    public func usageChunk(promptTokens: Int, completionTokens: Int) -> JSON {
        .object([
            ("id", .string(id)), ("object", "chat.completion.chunk"), ("created", JSON(created)), ("model", .string(model)),
            ("choices", []), ("usage", Self.usage(prompt: promptTokens, completion: completionTokens)),
        ])
    }
}

/// Server-sent events as OpenAI frames them: `data: <json>\n\n`, ending with `data: [DONE]\n\n`.
public enum ServerSentEvents {
    public static func event(_ json: JSON) -> String { "data: " + json.serializedString + "\n\n" }
    public static let done = "data: [DONE]\n\n"
}

/// `GET /v1/models`.
public func modelList(id: String, created: Int) -> JSON {
    .object([
        ("object", "list"),
        ("data", [.object([("id", .string(id)), ("object", "model"), ("created", JSON(created)), ("owned_by", "flamingo")])]),
    ])
}
