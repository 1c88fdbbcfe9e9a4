import ArgumentParser
import FlamingoCore
import FlamingoModel
import Foundation

struct GenerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text for a prompt with interleaved images."
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Prompt text; each <image> marks where the next --image goes.")
    var prompt: String?

    @Option(name: .customLong("input-ids"), help: "Raw prompt token ids, comma-separated; the image token id marks image positions.")
    var inputIDs: String?

    @Option(name: .customLong("image"), help: "An image file (PNG or JPEG), once per image, in prompt order.")
    var images: [String] = []

    @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "Most tokens to generate.")
    var maxTokens: Int = 32

    @Flag(help: "Pick the most likely token at every step (the default unless --temperature is given).")
    var greedy = false

    @Option(parsing: .unconditional, help: "Sampling temperature (> 0 samples; 0 is greedy).")
    var temperature: Float?

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Nucleus sampling mass in (0, 1].")
    var topP: Float = 1.0

    @Option(parsing: .unconditional, help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Flag(help: "Print one JSON object: tokens, text, prompt_tokens, finish_reason.")
    var json = false

    @Option(name: .customLong("dump-logits"), help: "Write the float32 logits of the last prompt position to this .npy file.")
    var dumpLogits: String?

    func run() async throws {
        try await failing {
            modelOptions.configureThreads()
            if prompt != nil && inputIDs != nil { throw ValidationError("give --prompt or --input-ids, not both") }
            guard maxTokens >= 1 else { throw RequestError.badMaxTokens(maxTokens) }
            if greedy && temperature != nil { throw ValidationError("--greedy and --temperature exclude each other") }

            let directory = try ModelDirectory(modelOptions.modelURL)
            let tokens: [Int]
            if let inputIDs {
                tokens = try parseIDs(inputIDs)
            } else if let prompt {
                guard let tokenizer = directory.tokenizer else {
                    throw ValidationError("\(directory.url.path) has no tokenizer.json; use --input-ids")
                }
                let builder = PromptBuilder(tokenizer: tokenizer)
                let markers = builder.expandedText(prompt).imageCount
                if markers != images.count { throw RequestError.imageCountMismatch(markers: markers, images: images.count) }
                tokens = builder.tokens(prompt)
            } else {
                throw ValidationError("give a prompt with --prompt or --input-ids")
            }
            let pixels = try images.map { path in
                try directory.preprocessor(RGBImage(contentsOf: URL(fileURLWithPath: path)))
            }
            let sampling: SamplingParameters = (temperature ?? 0) > 0
                ? .sample(temperature: temperature!, topP: topP, seed: seed) : .greedy
            let request = GenerationRequest(
                promptTokens: tokens, images: pixels, maxTokens: maxTokens, sampling: sampling,
                stopTokens: Set(directory.config.text.eosTokenIDs))

            let model = try loadWithProgress(directory)
            let generator = Generator(model: model, imageTokenID: directory.imageTokenID)
            _ = try generator.validate(request)
            let result = try generator.generate(request)
            if let dumpLogits {
                try NPY.write(Tensor(result.promptLogits, shape: [result.promptLogits.count]), to: URL(fileURLWithPath: dumpLogits))
            }
            let text = directory.tokenizer?.decode(result.tokens, skipSpecialTokens: true)
            if json {
                var object: [String: Any] = [
                    "tokens": result.tokens, "prompt_tokens": tokens.count, "finish_reason": result.finishReason.rawValue,
                ]
                object["text"] = text ?? NSNull()
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(text ?? result.tokens.map(String.init).joined(separator: ","))
            }
        }
    }

    private func parseIDs(_ text: String) throws -> [Int] {
        try text.split(separator: ",").map { part in
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            guard let id = Int(trimmed) else { throw ValidationError("--input-ids: '\(trimmed)' is not an integer") }
            return id
        }
    }
}

/// Loads a model's weights, showing progress on stderr for large checkpoints.
func loadWithProgress(_ directory: ModelDirectory, parts: ModelParts? = nil) throws -> Flamingo {
    let start = Date()
    let progress = Progress(enabled: isatty(2) != 0)
    let model = try Flamingo(config: directory.config, weights: WeightStore(directory: directory.url),
                             parts: parts ?? .all(directory.config)) { step in
        progress.update("loading \(directory.url.lastPathComponent): \(step)")
    }
    progress.finish()
    let gigabytes = Double(model.weightBytes) / 1e9
    if gigabytes > 0.25 {
        FileHandle.standardError.write(Data(String(format: "loaded %.2f GB of weights in %.1f s\n", gigabytes, Date().timeIntervalSince(start)).utf8))
    }
    return model
}
