import FlamingoCore
import Foundation

/// One generation job: prompt ids (image positions marked by the image token), one preprocessed
/// image [3, S, S] per image token, and how to sample.
public struct GenerationRequest: Sendable {
    public var promptTokens: [Int]
    public var images: [Tensor]
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// Generation ends after any of these (the token is included in the output, as transformers does).
    public var stopTokens: Set<Int>

    public init(promptTokens: [Int], images: [Tensor], maxTokens: Int, sampling: SamplingParameters, stopTokens: Set<Int>) {
        self.promptTokens = promptTokens
        self.images = images
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopTokens = stopTokens
    }
}

public enum FinishReason: String, Sendable, Codable {
    /// A stop token was produced.
    case stop
    /// `maxTokens` were produced.
    case length
}

public struct GenerationResult: Sendable {
    public var tokens: [Int]
    public var finishReason: FinishReason
    /// Logits of the last prompt position, [vocab + additional].
    public var promptLogits: [Float]

    public init(tokens: [Int], finishReason: FinishReason, promptLogits: [Float]) {
        self.tokens = tokens
        self.finishReason = finishReason
        self.promptLogits = promptLogits
    }
}

/// Errors in a request (not in the model): reported to the user, never a crash.
public enum RequestError: Error, LocalizedError, Equatable {
    case emptyPrompt
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case imageCountMismatch(markers: Int, images: Int)
    case badMaxTokens(Int)
    case promptTooLong(tokens: Int, limit: Int)
    case badSampling(String)
    case imageTokenUnknown
    case noTokenizer(String)
    case promptMissing

    public var errorDescription: String? {
        switch self {
        case .emptyPrompt: "the prompt is empty"
        case .tokenOutOfRange(let token, let size): "token id \(token) is out of range (vocabulary size \(size))"
        case .imageCountMismatch(let markers, let images):
            "the prompt has \(markers) image marker(s) but \(images) image(s) were given"
        case .badMaxTokens(let n): "max tokens must be at least 1, got \(n)"
        case .promptTooLong(let tokens, let limit): "prompt of \(tokens) tokens plus generation exceeds the model's \(limit) positions"
        case .badSampling(let why): "bad sampling parameters: \(why)"
        case .imageTokenUnknown: "the model has no image token id (config.json image_token_id, or <image> in tokenizer.json)"
        case .noTokenizer(let dir): "\(dir) has no tokenizer.json; give token ids instead of a prompt"
        case .promptMissing: "give either a prompt or token ids"
        }
    }
}

/// Runs requests on a whole model in this process: the reference path the pipeline must match.
public struct Generator: Sendable {
    public let model: any VisionLanguageModel
    public let imageTokenID: Int?

    public init(model: any VisionLanguageModel, imageTokenID: Int?) {
        self.model = model
        self.imageTokenID = imageTokenID
    }

    /// Checks a request against the model; returns each prompt token's image index.
    public func validate(_ request: GenerationRequest) throws -> [Int?] {
        try request.validate(config: model.configuration, imageTokenID: imageTokenID)
    }

    /// Generates until a stop token or `maxTokens`.
    public func generate(_ request: GenerationRequest) throws -> GenerationResult {
        let imageIndex = try validate(request)
        precondition(model.parts == .all(model.configuration), "Generator needs the whole model")
        var cache = model.makeCache()
        for pixels in request.images {
            model.attachImage(model.visualTokens(pixels: pixels), to: &cache)
        }
        var h = model.embed(request.promptTokens)
        model.forward(&h, imageIndex: imageIndex, cache: &cache)
        let last = h.rows((h.dim(0) - 1)..<h.dim(0))
        var logits = model.logits(last).scalars
        let promptLogits = logits
        var output = SequenceOutput(request)
        // A decode step reuses the image-attention row of the last prompt token.
        let decodeImage = imageIndex.last ?? nil
        while true {
            let (token, finish) = output.next(logits: logits)
            if let finish {
                return GenerationResult(tokens: output.tokens, finishReason: finish, promptLogits: promptLogits)
            }
            var step = model.embed([token])
            model.forward(&step, imageIndex: [decodeImage], cache: &cache)
            logits = model.logits(step).scalars
        }
    }
}

extension GenerationRequest {
    /// Checks the request against a model's config; returns each prompt token's image index
    /// (the architecture's rule, `ModelConfiguration.imageIndices`).
    public func validate(config: any ModelConfiguration, imageTokenID: Int?) throws -> [Int?] {
        let language = config.language
        guard !promptTokens.isEmpty else { throw RequestError.emptyPrompt }
        guard maxTokens >= 1 else { throw RequestError.badMaxTokens(maxTokens) }
        for t in promptTokens where t < 0 || t >= language.vocabularySize {
            throw RequestError.tokenOutOfRange(token: t, vocabularySize: language.vocabularySize)
        }
        if promptTokens.count + maxTokens > language.maxPositions {
            throw RequestError.promptTooLong(tokens: promptTokens.count, limit: language.maxPositions)
        }
        if case .sample(let temperature, let topP, _) = sampling {
            guard temperature >= 0, temperature.isFinite else { throw RequestError.badSampling("temperature must be >= 0") }
            guard topP > 0, topP <= 1 else { throw RequestError.badSampling("top-p must be in (0, 1]") }
        }
        let markers = imageTokenID.map { id in promptTokens.filter { $0 == id }.count } ?? 0
        if markers != images.count {
            if imageTokenID == nil && !images.isEmpty { throw RequestError.imageTokenUnknown }
            throw RequestError.imageCountMismatch(markers: markers, images: images.count)
        }
        let s = config.imageSize
        for image in images where image.shape != [3, s, s] {
            throw RequestError.badSampling("image tensor \(image.shape) is not [3, \(s), \(s)]")
        }
        guard let imageTokenID else { return Array(repeating: nil, count: promptTokens.count) }
        return config.imageIndices(tokens: promptTokens, imageTokenID: imageTokenID)
    }
}
