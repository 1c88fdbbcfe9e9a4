import FlamingoCore
import Foundation

/// The files of a model directory besides the weights: config, tokenizer (optional: without it
/// only `--input-ids` prompts work) and image preprocessing settings.
public struct ModelDirectory: Sendable {
    public let url: URL
    public let config: any ModelConfiguration
    public let tokenizer: Tokenizer?
    public let preprocessor: ImagePreprocessor

    public init(_ url: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelLoadError.missingDirectory(url.path)
        }
        self.url = url
        config = try ModelRegistry.configuration(contentsOf: url.appendingPathComponent("config.json"))
        let tokenizerURL = url.appendingPathComponent("tokenizer.json")
        tokenizer = FileManager.default.fileExists(atPath: tokenizerURL.path) ? try Tokenizer(contentsOf: tokenizerURL) : nil
        let preprocessorURL = url.appendingPathComponent("preprocessor_config.json")
        var preprocessorConfig = FileManager.default.fileExists(atPath: preprocessorURL.path)
            ? try PreprocessorConfig(contentsOf: preprocessorURL) : PreprocessorConfig()
        // The vision encoder fixes the input size; a processor file that disagrees would only fail later.
        preprocessorConfig.height = config.imageSize
        preprocessorConfig.width = config.imageSize
        preprocessor = ImagePreprocessor(config: preprocessorConfig)
    }

    /// config.json's `image_token_id`, else the tokenizer's `<image>`.
    public var imageTokenID: Int? {
        config.imageTokenID ?? tokenizer?.tokenID(for: PromptBuilder.imageMarker)
    }

    /// Loads the weights of `parts` (default: all); `quantizeMatrices`: int8 at load.
    public func loadModel(parts: ModelParts? = nil, quantizeMatrices: Bool = false,
                          progress: (String) -> Void = { _ in }) throws -> any VisionLanguageModel {
        try config.loadModel(weights: WeightStore(directory: url, quantizeMatrices: quantizeMatrices),
                             parts: parts ?? .all(config), progress: progress)
    }
}
