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
public struct ChatRequestBuilder: Sendable {
    public let directory: ModelDirectory
    public let tokenizer: Tokenizer
    public let limits: ServerLimits
    public let images: ImageSource
    public let template: ChatTemplate
    /// Tokens that end generation: the model's end-of-sequence ids, and `<end_of_utterance>`
    /// when the template uses it.
    public let stopTokens: Set<Int>

    public init(directory: ModelDirectory, limits: ServerLimits, allowLocalFiles: Bool,
                templateStyle: ChatTemplate.Style = .idefics) throws {
        guard let tokenizer = directory.tokenizer else { throw ServingSetupError.noTokenizer(directory.url.path) }
        self.directory = directory
        self.tokenizer = tokenizer
        self.limits = limits
        let side = Int(Double(limits.maxImagePixels).squareRoot().rounded(.up))
        images = ImageSource(allowLocalFiles: allowLocalFiles,
                             limits: ImageLimits(maxSide: max(side, ImageLimits.default.maxSide), maxPixels: limits.maxImagePixels))
        template = ChatTemplate(style: templateStyle, tokenizer: tokenizer)
        var stops = Set(directory.config.language.eosTokenIDs)
        if let eou = template.endOfUtterance, let id = tokenizer.tokenID(for: eou) { stops.insert(id) }
        stopTokens = stops
    }

    /// The model's context: prompt plus completion tokens.
    public var contextLength: Int { directory.config.language.maxPositions }

    public func prepare(_ request: ChatCompletionRequest) throws -> PreparedCompletion {
        let (prompt, imageURLs) = template.render(request.messages)
        if imageURLs.count > limits.maxImagesPerRequest {
            throw APIError(status: .badRequest,
                           message: "Too many images: \(imageURLs.count) in this request, at most \(limits.maxImagesPerRequest) are allowed.",
                           param: "messages", code: "too_many_images")
        }
        let tokens = PromptBuilder(tokenizer: tokenizer).tokens(prompt)
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
