import ArgumentParser
import FlamingoCluster
import FlamingoCore
import FlamingoModel
import Foundation

struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Exact-match accuracy per task on a JSON-lines set of cases (alone, or under mpirun).",
        discussion: """
        Each line: {"prompt": "<image>Question: ...? Answer:", "images": ["img/1.png"], "answer": "red", "task": "colour"}
        (image paths relative to the file; optional "pytorch_prediction": the reference model's output, compared too). A prediction matches when,
        trimmed of spaces and one trailing ".", it equals the answer.
        """
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pipelineOptions: PipelineCommandOptions

    @Option(help: "The cases (JSON lines).")
    var cases: String

    @Option(name: .customLong("max-tokens"), help: "Tokens to generate per case unless the case says otherwise.")
    var maxTokens: Int = 8

    @Flag(help: "Print JSON: accuracy per task and every prediction.")
    var json = false

    struct Case {
        let prompt: String
        let images: [String]
        let answer: String
        let task: String
        let reference: String?
        /// The case's own "max_tokens", else --max-tokens.
        let maxTokens: Int?
    }

    func run() async throws {
        var loaded: [Case] = []
        try await runOnRanks(pipelineOptions: pipelineOptions, modelOptions: modelOptions) { directory in
            loaded = try readCases()
            let builder = RequestBuilder(directory: directory)
            return try loaded.enumerated().map { i, c in
                do {
                    return try builder.request(prompt: c.prompt, inputIDs: nil, imagePaths: c.images, maxTokens: c.maxTokens ?? maxTokens,
                                              sampling: .greedy)
                } catch {
                    throw ValidationError("\(cases):\(i + 1): \((error as? LocalizedError)?.errorDescription ?? "\(error)")")
                }
            }
        } report: { directory, _, report in
            var byTask: [String: (right: Int, total: Int)] = [:]
            var agreeWithReference = 0, withReference = 0
            var predictions: [Report.Prediction] = []
            for (c, result) in zip(loaded, report.results) {
                let text = directory.tokenizer?.decode(result.tokens, skipSpecialTokens: true) ?? ""
                let prediction = Self.normalise(text)
                let right = prediction == Self.normalise(c.answer)
                byTask[c.task, default: (0, 0)].total += 1
                if right { byTask[c.task, default: (0, 0)].right += 1 }
                if let reference = c.reference {
                    withReference += 1
                    if Self.normalise(reference) == prediction { agreeWithReference += 1 }
                }
                predictions.append(.init(task: c.task, answer: c.answer, prediction: prediction, correct: right))
            }
            let total = byTask.values.reduce((0, 0)) { ($0.0 + $1.right, $0.1 + $1.total) }
            if json {
                print(try jsonLine(Report(
                    accuracy: Double(total.0) / Double(max(total.1, 1)), cases: total.1,
                    tasks: byTask.mapValues { .init(accuracy: Double($0.right) / Double($0.total), correct: $0.right, cases: $0.total) },
                    predictions: predictions,
                    agreeWithReference: withReference > 0 ? agreeWithReference : nil, withReference: withReference > 0 ? withReference : nil)))
                return
            }
            for task in byTask.keys.sorted() {
                let t = byTask[task]!
                print(task.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %5.1f%%  (%d/%d)", 100 * Double(t.right) / Double(t.total), t.right, t.total))
            }
            print("all".padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %5.1f%%  (%d/%d)", 100 * Double(total.0) / Double(max(total.1, 1)), total.0, total.1))
            if withReference > 0 { print("identical to the reference prediction: \(agreeWithReference)/\(withReference)") }
        }
    }

    /// `--json`: accuracy overall and per task, and every prediction.
    struct Report: Encodable {
        struct Task: Encodable {
            let accuracy: Double
            let correct: Int
            let cases: Int
        }

        struct Prediction: Encodable {
            let task: String
            let answer: String
            let prediction: String
            let correct: Bool
        }

        let accuracy: Double
        let cases: Int
        let tasks: [String: Task]
        let predictions: [Prediction]
        /// Absent when no case has a reference prediction.
        let agreeWithReference: Int?
        let withReference: Int?

        enum CodingKeys: String, CodingKey {
            case accuracy, cases, tasks, predictions, agreeWithReference = "agree_with_reference", withReference = "with_reference"
        }
    }

    /// One line of `--cases` ("prompt" and "answer" are required, checked after decoding).
    struct Line: Decodable {
        let prompt: String?
        let answer: String?
        let images: [String]?
        let task: String?
        let pytorchPrediction: String?
        let maxTokens: Int?

        enum CodingKeys: String, CodingKey {
            case prompt, answer, images, task, pytorchPrediction = "pytorch_prediction", maxTokens = "max_tokens"
        }
    }

    static func normalise(_ text: String) -> String {
        var t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if t.hasSuffix(".") { t.removeLast() }
        return t.trimmingCharacters(in: .whitespaces)
    }

    private func readCases() throws -> [Case] {
        guard let text = try? String(contentsOfFile: cases, encoding: .utf8) else { throw ValidationError("cannot read \(cases)") }
        let base = URL(fileURLWithPath: cases).deletingLastPathComponent()
        return try text.split(separator: "\n", omittingEmptySubsequences: true).enumerated().map { n, line in
            let needs = "needs \"prompt\" and \"answer\""
            let o = try decodeJSONLine(Line.self, line, number: n + 1, of: cases, notAnObject: needs)
            guard let prompt = o.prompt, let answer = o.answer else { throw ValidationError("\(cases):\(n + 1): \(needs)") }
            return Case(prompt: prompt, images: imagePaths(o.images, relativeTo: base), answer: answer, task: o.task ?? "all",
                        reference: o.pytorchPrediction, maxTokens: o.maxTokens)
        }
    }
}
