import FlamingoCore
import FlamingoModel
import Foundation

/// A chat request made ready for the engine.
public struct PreparedCompletion: Sendable {
    public var generation: GenerationRequest
    public var stop: [String]
    public var stream: Bool
    public var includeUsage: Bool
    public var promptTokenCount: Int { generation.promptTokens.count }
}

/// Why a model cannot be served.
public enum ServingSetupError: Error, LocalizedError, Equatable {
    case noTokenizer(String)

    public var errorDescription: String? {
        switch self {
        case .noTokenizer(let path): "\(path) has no tokenizer.json, which serving needs to turn chat messages into tokens"
        }
    }
}

/// Turns a checked `ChatCompletionRequest` into a `GenerationRequest` for the served model:
/// chat template, tokenization, limits, image decoding and preprocessing. Cheap checks come first,
/// so a request over a limit is refused before any image is decoded.
///
/// With a model's Jinja template, the rendered text must hold the model's image token (its
/// `image_token_id`'s text, else `<image>`) once per image part, in order: each is where
/// `PromptBuilder` puts that image. A prompt that starts with the BOS token gets no second one.
public struct ChatRequestBuilder: Sendable {
    public let directory: ModelDirectory
    public let tokenizer: Tokenizer
    public let limits: ServerLimits
    public let images: ImageSource
    public let template: PromptTemplate
    /// What a Jinja template writes for an image part.
    public let imageToken: String
    /// Tokens that end generation: the model's end-of-sequence ids, and `<end_of_utterance>`
    /// when the template uses it.
    public let stopTokens: Set<Int>

    /// - Throws: `ServingSetupError` without a tokenizer, `ChatTemplateLoadError` for a template
    ///   that does not load.
    public init(directory: ModelDirectory, limits: ServerLimits, allowLocalFiles: Bool,
                chatTemplate: ChatTemplateSelection = .model(fallback: .idefics)) throws {
        guard let tokenizer = directory.tokenizer else { throw ServingSetupError.noTokenizer(directory.url.path) }
        self.directory = directory
        self.tokenizer = tokenizer
        self.limits = limits
        let side = Int(Double(limits.maxImagePixels).squareRoot().rounded(.up))
        images = ImageSource(allowLocalFiles: allowLocalFiles,
                             limits: ImageLimits(maxSide: max(side, ImageLimits.default.maxSide), maxPixels: limits.maxImagePixels))
        template = try PromptTemplate(chatTemplate, directory: directory.url, tokenizer: tokenizer)
        imageToken = directory.imageTokenID.flatMap { tokenizer.token(for: $0) } ?? PromptBuilder.imageMarker
        var stops = Set(directory.config.language.eosTokenIDs)
        let eou: String?
        switch template {
        case .builtIn(let t): eou = t.endOfUtterance
        case .jinja(let t): eou = t.text.contains(ChatTemplate.endOfUtteranceToken) ? ChatTemplate.endOfUtteranceToken : nil
        }
        if let eou, let id = tokenizer.tokenID(for: eou) { stops.insert(id) }
        stopTokens = stops
    }

    /// The prompt text (images at `PromptBuilder.imageMarker`), the image URLs in prompt order, and
    /// whether the tokenizer's BOS still has to be added.
    func renderPrompt(_ request: ChatCompletionRequest) throws -> (text: String, images: [(url: String, param: String)], addBOS: Bool) {
        let jinja: ModelChatTemplate
        switch template {
        case .builtIn(let t):
            let (text, images) = t.render(request.messages)
            return (text, images, true)
        case .jinja(let t):
            jinja = t
        }
        var images: [(url: String, param: String)] = []
        for (i, message) in request.messages.enumerated() {
            for part in message.parts {
                switch part {
                case .image(let url, let param): images.append((url, param))
                case .text(let text) where text.contains(imageToken):
                    throw APIError.invalidValue("messages[\(i)].content", "text may not contain '\(imageToken)'; send images as image_url parts.")
                case .text: break
                }
            }
        }
        var text: String
        do {
            text = try jinja.render(messages: request.templateMessages, addGenerationPrompt: true)
        } catch .raised(let reason) {
            throw APIError(status: .badRequest, message: "The model's chat template refused these messages: \(reason)",
                           param: "messages", code: "chat_template_refused")
        } catch {
            throw APIError(status: .badRequest, message: "The model's chat template failed on these messages: \(error.errorDescription ?? "\(error)")",
                           param: "messages", code: "chat_template_error")
        }
        if imageToken != PromptBuilder.imageMarker {
            if text.contains(PromptBuilder.imageMarker) {
                throw APIError(status: .badRequest, message: "The model's chat template wrote '\(PromptBuilder.imageMarker)' outside an image part.",
                               param: "messages", code: "chat_template_error")
            }
            text = text.replacingOccurrences(of: imageToken, with: PromptBuilder.imageMarker)
        }
        let written = text.components(separatedBy: PromptBuilder.imageMarker).count - 1
        guard written == images.count else {
            throw APIError(status: .badRequest,
                           message: "The model's chat template wrote the image token '\(imageToken)' \(written) time(s) for \(images.count) image(s) in the messages.",
                           param: "messages", code: "chat_template_error")
        }
        let bos = tokenizer.bosTokenID.flatMap { tokenizer.token(for: $0) }
        return (text, images, !(bos.map { text.hasPrefix($0) } ?? false))
    }

    /// The model's context: prompt plus completion tokens.
    public var contextLength: Int { directory.config.language.maxPositions }

    public func prepare(_ request: ChatCompletionRequest) throws -> PreparedCompletion {
        let (prompt, imageURLs, addBOS) = try renderPrompt(request)
        if imageURLs.count > limits.maxImagesPerRequest {
            throw APIError(status: .badRequest,
                           message: "Too many images: \(imageURLs.count) in this request, at most \(limits.maxImagesPerRequest) are allowed.",
                           param: "messages", code: "too_many_images")
        }
        let tokens = PromptBuilder(tokenizer: tokenizer).tokens(prompt, addBOS: addBOS)
        let maxPrompt = min(limits.maxPromptTokens ?? contextLength - 1, contextLength - 1)
        if tokens.count > maxPrompt {
            throw APIError(status: .badRequest,
                           message: "The messages are \(tokens.count) tokens long; this server accepts prompts of at most \(maxPrompt) tokens.",
                           param: "messages", code: "context_length_exceeded")
        }
        let room = contextLength - tokens.count
        let maxTokens: Int
        if let asked = request.maxTokens {
            if asked > limits.maxCompletionTokens {
                throw APIError(status: .badRequest,
                               message: "max_tokens is too large: \(asked). This server allows at most \(limits.maxCompletionTokens) completion tokens.",
                               param: "max_tokens", code: "invalid_value")
            }
            if asked > room {
                throw APIError(status: .badRequest,
                               message: "This model's maximum context length is \(contextLength) tokens. However, you requested \(tokens.count + asked) tokens (\(tokens.count) in the messages, \(asked) in the completion). Please reduce the length of the messages or completion.",
                               param: "messages", code: "context_length_exceeded")
            }
            maxTokens = asked
        } else {
            maxTokens = min(limits.maxCompletionTokens, room)
        }

        let pixels = try imageURLs.map { url, param in
            directory.preprocessor(try images.image(url: url, param: param))
        }
        let generation = GenerationRequest(promptTokens: tokens, images: pixels, maxTokens: maxTokens,
                                           sampling: sampling(request), stopTokens: stopTokens)
        return PreparedCompletion(generation: generation, stop: request.stop, stream: request.stream,
                                  includeUsage: request.includeUsage)
    }

    /// OpenAI's defaults: temperature 1, top_p 1; temperature 0 (or top_p 0) is greedy. Without a
    /// seed, a random one.
    func sampling(_ request: ChatCompletionRequest) -> SamplingParameters {
        let temperature = request.temperature ?? 1
        let topP = request.topP ?? 1
        if temperature == 0 || topP == 0 { return .greedy }
        let seed = request.seed.map { UInt64(bitPattern: $0) } ?? UInt64.random(in: .min ... .max)
        return .sample(temperature: Float(temperature), topP: Float(topP), seed: seed)
    }
}
