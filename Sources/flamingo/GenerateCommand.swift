import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct GenerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text for a prompt with interleaved images (alone, or under mpirun across ranks)."
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pipelineOptions: PipelineCommandOptions

    @Option(help: "Prompt text; each <image> marks where the next --image goes.")
    var prompt: String?

    @Option(name: .customLong("input-ids"), help: "Raw prompt token ids, comma-separated; the image token id marks image positions.")
    var inputIDs: String?

    @Option(name: .customLong("image"), help: "An image file (PNG or JPEG), once per image, in prompt order.")
    var images: [String] = []

    @Option(name: .customLong("requests"), help: "A JSON-lines file of requests to run as one batch: {\"prompt\" | \"input_ids\", \"images\" (relative to the file), \"max_tokens\", \"temperature\", \"top_p\", \"seed\", \"ignore_eos\"}.")
    var requestsFile: String?

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

    @Option(name: .customLong("dump-logits"), help: "Write the float32 logits of the last prompt position to this .npy file ([requests, vocab] with --requests).")
    var dumpLogits: String?

    func run() async throws {
        try await runOnRanks(pipelineOptions: pipelineOptions, modelOptions: modelOptions) { directory in
            // Runs on rank 0 only: all user input is read and checked here.
            if greedy && temperature != nil { throw ValidationError("--greedy and --temperature exclude each other") }
            if let requestsFile {
                if prompt != nil || inputIDs != nil || !images.isEmpty {
                    throw ValidationError("--requests replaces --prompt, --input-ids and --image")
                }
                return try RequestFile.read(requestsFile, builder: RequestBuilder(directory: directory), defaultMaxTokens: maxTokens)
            }
            if prompt != nil && inputIDs != nil { throw ValidationError("give --prompt or --input-ids, not both") }
            guard maxTokens >= 1 else { throw RequestError.badMaxTokens(maxTokens) }
            let ids = try inputIDs.map(parseIDs)
            let sampling: SamplingParameters = (temperature ?? 0) > 0
                ? .sample(temperature: temperature!, topP: topP, seed: seed) : .greedy
            return [try RequestBuilder(directory: directory).request(prompt: prompt, inputIDs: ids, imagePaths: images,
                                                                     maxTokens: maxTokens, sampling: sampling)]
        } report: { directory, requests, report in
            if let dumpLogits {
                // One row per request: the float32 logits of its last prompt position.
                let rows = report.results.map(\.promptLogits)
                try NPY.write(Tensor(rows.flatMap { $0 }, shape: requestsFile == nil ? [rows[0].count] : [rows.count, rows[0].count]),
                              to: URL(fileURLWithPath: dumpLogits))
            }
            if requestsFile != nil {
                var tokens = 0
                for (i, result) in report.results.enumerated() {
                    tokens += result.tokens.count
                    print(try jsonLine(Output(result, requests[i], directory, index: i)))
                }
                FileHandle.standardError.write(Data(String(
                    format: "%d requests, %d tokens in %.2f s: %.1f tokens/s\n",
                    report.results.count, tokens, report.seconds, Double(tokens) / max(report.seconds, 1e-9)).utf8))
                return
            }
            let result = report.results[0]
            if json {
                print(try jsonLine(Output(result, requests[0], directory, index: nil)))
            } else {
                print(directory.tokenizer?.decode(result.tokens, skipSpecialTokens: true)
                      ?? result.tokens.map(String.init).joined(separator: ","))
            }
        }
    }

    /// One generation as `--json` and `--requests` print it.
    struct Output: Encodable {
        let tokens: [Int]
        let promptTokens: Int
        let finishReason: String
        /// null without a tokenizer.
        let text: String?
        /// The request's position in `--requests` (absent for one prompt).
        let index: Int?

        enum CodingKeys: String, CodingKey { case tokens, promptTokens = "prompt_tokens", finishReason = "finish_reason", text, index }

        init(_ result: GenerationResult, _ request: GenerationRequest, _ directory: ModelDirectory, index: Int?) {
            tokens = result.tokens
            promptTokens = request.promptTokens.count
            finishReason = result.finishReason.rawValue
            text = directory.tokenizer?.decode(result.tokens, skipSpecialTokens: true)
            self.index = index
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(tokens, forKey: .tokens)
            try c.encode(promptTokens, forKey: .promptTokens)
            try c.encode(finishReason, forKey: .finishReason)
            if let text { try c.encode(text, forKey: .text) } else { try c.encodeNil(forKey: .text) }
            try c.encodeIfPresent(index, forKey: .index)
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

/// `--requests FILE`: one JSON object per line.
enum RequestFile {
    /// One line; absent and null members take their defaults.
    struct Line: Decodable {
        let prompt: String?
        let inputIDs: [Int]?
        let images: [String]?
        let maxTokens: Int?
        let temperature: Float?
        let topP: Float?
        let seed: UInt64?
        let ignoreEOS: Bool?

        enum CodingKeys: String, CodingKey {
            case prompt, inputIDs = "input_ids", images, maxTokens = "max_tokens", temperature, topP = "top_p", seed, ignoreEOS = "ignore_eos"
        }
    }

    static func read(_ path: String, builder: RequestBuilder, defaultMaxTokens: Int) throws -> [GenerationRequest] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read requests file \(path)")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        var requests: [GenerationRequest] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let object = try decodeJSONLine(Line.self, line, number: n + 1, of: path, notAnObject: "not a JSON object")
            let images = imagePaths(object.images, relativeTo: base)
            let temperature = object.temperature ?? 0
            let sampling: SamplingParameters = temperature > 0
                ? .sample(temperature: temperature, topP: object.topP ?? 1, seed: object.seed ?? 0) : .greedy
            do {
                var request = try builder.request(prompt: object.prompt, inputIDs: object.inputIDs, imagePaths: images,
                                                  maxTokens: object.maxTokens ?? defaultMaxTokens, sampling: sampling)
                // Benchmarks want fixed-length generations.
                if object.ignoreEOS == true { request.stopTokens = [] }
                requests.append(request)
            } catch {
                throw ValidationError("\(path):\(n + 1): \((error as? LocalizedError)?.errorDescription ?? "\(error)")")
            }
        }
        guard !requests.isEmpty else { throw ValidationError("\(path) has no requests") }
        return requests
    }
}
