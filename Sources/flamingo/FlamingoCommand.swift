import ArgumentParser
import FlamingoCore
import Foundation

@main
enum Main {
    /// Chooses the kernels before any command runs: a `FLAMINGO_KERNELS` this CPU cannot honour is
    /// one clear error, never a silent fallback.
    static func main() async {
        do {
            try KernelTable.configureFromEnvironment(ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            exit(1)
        }
        await FlamingoCommand.main()
    }
}

struct FlamingoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flamingo",
        abstract: "Flamingo visual language model inference, in one process or pipelined across MPI ranks.",
        subcommands: [GenerateCommand.self, ServeCommand.self, ChatTemplateCommand.self, PlanCommand.self, EvalCommand.self, InfoCommand.self, BenchCommand.self,
                      SynthCommand.self, QuantizeCommand.self, ProfileCommand.self, SimulateCommand.self]
    )
}

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Model directory (default: $FLAMINGO_MODEL, else models/demo).")
    var model: String?

    @Option(name: .long, help: "Compute threads for this process (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Quantize the language model's weight matrices at load: int8 (as `flamingo quantize` would, in memory).")
    var quantize: String?

    /// `--quantize int8` (anything else is an error).
    func quantizeMatrices() throws -> Bool {
        guard let quantize else { return false }
        guard WeightFormat(name: quantize) == .int8 else { throw ValidationError("--quantize: only int8 is supported, got '\(quantize)'") }
        return true
    }

    var modelURL: URL {
        URL(fileURLWithPath: model ?? ProcessInfo.processInfo.environment["FLAMINGO_MODEL"] ?? "models/demo")
    }

    func configureThreads() {
        ComputeThreads.configure(threads ?? ProcessInfo.processInfo.activeProcessorCount)
    }
}

/// The "images" of a JSON-lines request or eval case; relative paths are relative to the file's
/// directory `base`.
func imagePaths(_ images: [String]?, relativeTo base: URL) -> [String] {
    (images ?? []).map { $0.hasPrefix("/") ? $0 : base.appendingPathComponent($0).path }
}

/// Decodes line `number` of the JSON-lines file `path`. A line that is not a JSON object fails
/// with `notAnObject`; a member of the wrong type is named (absent and null members are nil).
func decodeJSONLine<T: Decodable>(_ type: T.Type, _ line: Substring, number: Int, of path: String,
                                  notAnObject: String) throws -> T {
    let data = Data(line.utf8)
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let error as DecodingError {
        let location = "\(path):\(number)"
        if let member = error.member { throw ValidationError("\(location): \(member) has the wrong type") }
        // JSONDecoder does not name the member of a number its type cannot hold (1.5 or -1 for a count).
        if (try? JSONDecoder().decode([String: Ignored].self, from: data)) != nil {
            throw ValidationError("\(location): a number is out of range or not an integer")
        }
        throw ValidationError("\(location): \(notAnObject)")
    }
}

/// Any JSON value, unread.
private struct Ignored: Decodable {
    init(from decoder: Decoder) {}
}

extension DecodingError {
    /// The member the error is about, e.g. `"input_ids"[2]`; nil for the document itself.
    var member: String? {
        let codingPath: [CodingKey]
        switch self {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c), .dataCorrupted(let c): codingPath = c.codingPath
        @unknown default: return nil
        }
        guard let first = codingPath.first else { return nil }
        return "\"\(first.stringValue)\"" + codingPath.dropFirst().map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    }
}

/// Prints `error: message` as one line on stderr and exits non-zero: input errors are never crashes.
func failing<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        throw ExitCode(1)
    }
}

/// A one-line status on stderr, overwritten in place on a terminal.
struct Progress {
    let enabled: Bool
    func update(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
    }
    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
