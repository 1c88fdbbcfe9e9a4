import ArgumentParser
import FlamingoCore
import FlamingoModel
import Foundation

struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Describe a model directory (shapes, weights, tokenizer) and this machine's CPU."
    )

    @OptionGroup var modelOptions: ModelOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await failing {
            let directory = try ModelDirectory(modelOptions.modelURL)
            let model = try directory.loadModel()
            let c = directory.config
            var dtypes: [String: Int] = [:]
            for name in model.weights.tensorNames {
                if let e = model.weights.entry(name) { dtypes[e.dtype.rawValue, default: 0] += e.range.count }
            }
            if json {
                let info = Info(model: directory.url.path, modelType: c.modelType, config: c,
                                visualTokensPerImage: c.visualTokensPerImage, tensors: model.weights.tensorNames.count,
                                weightBytesByDType: dtypes, imageTokenID: directory.imageTokenID,
                                tokenizer: directory.tokenizer.map { Info.TokenizerInfo(vocabularySize: $0.vocabularySize) },
                                cpu: CPUFeatures.current.modelName, cpuFeatures: CPUFeatures.current.description,
                                kernels: KernelTable.active.variants, kernelLevel: KernelTable.active.level.rawValue)
                print(String(decoding: try jsonData(info, pretty: true), as: UTF8.self))
                return
            }
            let total = dtypes.values.reduce(0, +)
            print("model        \(directory.url.path) (\(c.modelType))")
            for (label, text) in c.summary { print(label.padding(toLength: 12, withPad: " ", startingAt: 0) + " " + text) }
            print("weights      \(model.weights.tensorNames.count) tensors, \(String(format: "%.1f", Double(total) / 1e6)) MB (" + dtypes.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1f", Double($0.value) / 1e6)) MB" }.joined(separator: ", ") + ")")
            print("image token  \(directory.imageTokenID.map(String.init) ?? "none")")
            print("tokenizer    \(directory.tokenizer.map { "\($0.vocabularySize) ids" } ?? "none (use --input-ids)")")
            print("cpu          \(CPUFeatures.current.modelName): \(CPUFeatures.current.description)")
            print("kernels      \(KernelTable.active.summary) (level \(KernelTable.active.level.rawValue); FLAMINGO_KERNELS=portable|avx2|avx512|best)")
        }
    }
}

/// `info --json`: the machine and the directory, with its config as the architecture reads it.
private struct Info: Encodable {
    struct TokenizerInfo: Encodable {
        var vocabularySize: Int
        enum CodingKeys: String, CodingKey { case vocabularySize = "vocabulary_size" }
    }

    var model: String
    var modelType: String
    var config: any ModelConfiguration
    var visualTokensPerImage: Int
    var tensors: Int
    var weightBytesByDType: [String: Int]
    var imageTokenID: Int?
    var tokenizer: TokenizerInfo?
    var cpu: String
    var cpuFeatures: String
    var kernels: [String: String]
    var kernelLevel: String

    enum CodingKeys: String, CodingKey {
        case model, modelType = "model_type", config, visualTokensPerImage = "visual_tokens_per_image", tensors
        case weightBytesByDType = "weight_bytes_by_dtype", imageTokenID = "image_token_id", tokenizer, cpu
        case cpuFeatures = "cpu_features", kernels, kernelLevel = "kernel_level"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(config, forKey: .config)
        try c.encode(visualTokensPerImage, forKey: .visualTokensPerImage)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(weightBytesByDType, forKey: .weightBytesByDType)
        try c.encode(imageTokenID, forKey: .imageTokenID)  // null when unknown
        try c.encode(tokenizer, forKey: .tokenizer)
        try c.encode(cpu, forKey: .cpu)
        try c.encode(cpuFeatures, forKey: .cpuFeatures)
        try c.encode(kernels, forKey: .kernels)
        try c.encode(kernelLevel, forKey: .kernelLevel)
    }
}
