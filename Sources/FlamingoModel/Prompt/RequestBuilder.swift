import FlamingoCore
import Foundation

/// Turns what a user gives (prompt text or token ids, image files) into a `GenerationRequest`
/// (checked against the model when the engine admits it) for a model directory: tokenization, image decoding and preprocessing.
public struct RequestBuilder: Sendable {
    public let directory: ModelDirectory

    public init(directory: ModelDirectory) { self.directory = directory }

    /// - Parameters:
    ///   - prompt: text with `<image>` markers (needs tokenizer.json), or
    ///   - inputIDs: raw token ids, the image token marking image positions.
    public func request(prompt: String?, inputIDs: [Int]?, imagePaths: [String], maxTokens: Int,
                        sampling: SamplingParameters) throws -> GenerationRequest {
        let tokens: [Int]
        switch (prompt, inputIDs) {
        case (let text?, nil):
            guard let tokenizer = directory.tokenizer else { throw RequestError.noTokenizer(directory.url.path) }
            let builder = PromptBuilder(tokenizer: tokenizer)
            let markers = builder.expandedText(text).imageCount
            if markers != imagePaths.count { throw RequestError.imageCountMismatch(markers: markers, images: imagePaths.count) }
            tokens = builder.tokens(text)
        case (nil, let ids?):
            tokens = ids
        default:
            throw RequestError.promptMissing
        }
        let images = try imagePaths.map { try directory.preprocessor(RGBImage(contentsOf: URL(fileURLWithPath: $0))) }
        return GenerationRequest(promptTokens: tokens, images: images, maxTokens: maxTokens, sampling: sampling,
                                 stopTokens: Set(directory.config.language.eosTokenIDs))
    }
}
