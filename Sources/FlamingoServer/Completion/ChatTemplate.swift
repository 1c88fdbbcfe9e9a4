import FlamingoModel
import Foundation

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
///
/// A model's own Jinja `chat_template` is `ModelChatTemplate`; `ChatTemplateSelection` says which
/// of the two a server uses.
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
    /// (with their request paths, for error messages). `addGenerationPrompt` false leaves out the
    /// final `Assistant:` (idefics style), as a chat template's `add_generation_prompt` does.
    public func render(_ messages: [ChatCompletionRequest.Message],
                       addGenerationPrompt: Bool = true) -> (prompt: String, images: [(url: String, param: String)]) {
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
        if style == .idefics, addGenerationPrompt { prompt += "Assistant:" }
        return (prompt, images)
    }
}

/// Which prompt format a server uses (`flamingo serve --chat-template`).
public enum ChatTemplateSelection: Sendable, Equatable {
    /// The model's own chat template (`ModelChatTemplate.find(in:)`) when it has one, else the
    /// built-in `fallback` style. The default.
    case model(fallback: ChatTemplate.Style)
    /// A built-in style, whatever the model ships.
    case builtIn(ChatTemplate.Style)
    /// A Jinja file (or a JSON file with "chat_template"), whatever the model ships.
    case file(URL)

    /// `--chat-template VALUE`: a style name (`idefics`, `plain`), else a file path; nil: `.model`.
    public init(argument: String?) {
        guard let argument else { self = .model(fallback: .idefics); return }
        if let style = ChatTemplate.Style(rawValue: argument) { self = .builtIn(style) } else { self = .file(URL(fileURLWithPath: argument)) }
    }
}

/// The prompt format in use: a built-in style or a model's Jinja template.
public enum PromptTemplate: Sendable {
    case builtIn(ChatTemplate)
    case jinja(ModelChatTemplate)

    /// Resolves `selection` for the model in `directory` (`tokenizer` decides the built-in
    /// styles' `<end_of_utterance>`).
    public init(_ selection: ChatTemplateSelection, directory: URL, tokenizer: Tokenizer?) throws(ChatTemplateLoadError) {
        switch selection {
        case .builtIn(let style):
            self = .builtIn(ChatTemplate(style: style, tokenizer: tokenizer))
        case .file(let url):
            self = .jinja(try ModelChatTemplate(contentsOf: url, modelDirectory: directory))
        case .model(let fallback):
            if let own = try ModelChatTemplate.find(in: directory) {
                self = .jinja(own)
            } else {
                self = .builtIn(ChatTemplate(style: fallback, tokenizer: tokenizer))
            }
        }
    }
}
