import FlamingoModel

/// How a conversation becomes one IDEFICS prompt (the format IDEFICS was trained and instructed
/// with, "User:" / "Assistant:" turns; HuggingFaceM4/idefics-9b-instruct's chat template):
///
///     {system text}\n                      one line per system or developer message
///     User: {text and images}{eou}\n       each image part becomes <image> where it stands
///     Assistant: {text}{eou}\n
///     ...
///     Assistant:
///
/// `{eou}` is `<end_of_utterance>` when the tokenizer has that token (IDEFICS instruct models
/// do, and end their answers with it: it is then a stop token too), else nothing. Text parts of one
/// message are concatenated as they are. `PromptBuilder` then applies the processor's rules
/// (spaces around images stripped, fake tokens around each image).
///
/// The `plain` style is for base (not instruction-tuned) models such as models/demo: the messages'
/// contents back to back, nothing added, so a user message `<image>Question: ...? Answer:` is the
/// prompt as the model was trained on it.
public struct ChatTemplate: Sendable, Equatable {
    public static let endOfUtteranceToken = "<end_of_utterance>"

    public enum Style: String, Sendable, CaseIterable {
        /// "User:" / "Assistant:" turns (IDEFICS instruct).
        case idefics
        /// Message contents concatenated, no roles, no trailing "Assistant:".
        case plain
    }

    public var style: Style
    /// Appended to every turn (idefics style); nil for none.
    public var endOfUtterance: String?

    public init(style: Style = .idefics, endOfUtterance: String? = nil) {
        self.style = style
        self.endOfUtterance = style == .idefics ? endOfUtterance : nil
    }

    /// The template for a model: `<end_of_utterance>` is used when its tokenizer knows it.
    public init(style: Style = .idefics, tokenizer: Tokenizer?) {
        let eou = tokenizer?.tokenID(for: Self.endOfUtteranceToken) != nil ? Self.endOfUtteranceToken : nil
        self.init(style: style, endOfUtterance: eou)
    }

    /// The prompt text with one `<image>` marker per image part, and the image URLs in prompt order
    /// (with their request paths, for error messages).
    public func render(_ messages: [ChatCompletionRequest.Message]) -> (prompt: String, images: [(url: String, param: String)]) {
        var prompt = ""
        var images: [(url: String, param: String)] = []
        let eou = endOfUtterance ?? ""
        for message in messages {
            var body = ""
            for part in message.parts {
                switch part {
                case .text(let text): body += text
                case .image(let url, let param):
                    body += PromptBuilder.imageMarker
                    images.append((url, param))
                }
            }
            if style == .plain {
                prompt += body
                continue
            }
            switch message.role {
            case .system, .developer: prompt += body + "\n"
            case .user: prompt += "User: " + body + eou + "\n"
            case .assistant: prompt += "Assistant: " + body + eou + "\n"
            }
        }
        if style == .idefics { prompt += "Assistant:" }
        return (prompt, images)
    }
}
