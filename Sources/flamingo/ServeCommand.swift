import ArgumentParser
import FlamingoCluster
import FlamingoModel
import FlamingoServer
import Foundation
import Logging

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the model over an OpenAI-compatible HTTP API (alone, or under mpirun with the API on rank 0).",
        discussion: """
        POST /v1/chat/completions (text and images, streamed or not), GET /v1/models, GET /health, GET /metrics.
        SIGTERM or SIGINT: stop accepting, let requests in flight finish within --shutdown-grace, exit 0.
        """
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pipelineOptions: PipelineCommandOptions
    @OptionGroup var serveOptions: ServeOptions

    func validate() throws {
        _ = try serveOptions.serverConfiguration()
    }

    func run() async throws {
        let configuration = try serveOptions.serverConfiguration()
        try await runServing(pipelineOptions: pipelineOptions, modelOptions: modelOptions, maxQueued: serveOptions.maxQueue) { engine in
            // Rank 0 only: the HTTP API in front of the engine. An error ends up as one line from runServing.
            let server = try OpenAIServer(engine: engine, configuration: configuration, logger: serverLogger())
            try await server.run { port in
                let url = "http://\(configuration.host):\(port)/v1"
                if !engine.status.ready {
                    FileHandle.standardError.write(Data(
                        "listening on \(url) while the model loads (/health answers 503 until every rank is ready)\n".utf8))
                }
                // Not awaited: the server accepts connections meanwhile.
                Task {
                    while !engine.status.ready { try? await Task.sleep(for: .milliseconds(50)) }
                    // One line on stderr, which scripts (and the tests) read for the port.
                    let auth = configuration.apiKey == nil ? "" : " (API key required)"
                    let clearProgress = isatty(2) != 0 ? "\r\u{1B}[K" : ""
                    FileHandle.standardError.write(Data("\(clearProgress)serving \(server.modelID) on \(url)\(auth)\n".utf8))
                }
            }
        }
    }
}

/// Server logs on stderr, warnings and up unless $LOG_LEVEL says otherwise.
func serverLogger() -> Logger {
    var logger = Logger(label: "flamingo.server") { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    return logger
}

/// `flamingo serve` options besides the model and the pipeline.
struct ServeOptions: ParsableArguments {
    @Option(help: "Address to listen on. The default accepts connections from this machine only.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; the chosen one is printed).")
    var port = 8080

    @Option(name: .customLong("api-key"),
            help: "Require 'Authorization: Bearer KEY' on /v1 requests (default: $FLAMINGO_API_KEY; prefer it, command lines are visible to other users).")
    var apiKey: String?

    @Option(name: .customLong("served-model-name"), help: "The model id clients send (default: the model directory's name).")
    var servedModelName: String?

    @Flag(name: .customLong("allow-local-files"), help: "Accept file:// image URLs, which read files on this machine.")
    var allowLocalFiles = false

    @Option(name: .customLong("chat-template"),
            help: ArgumentHelp("How messages become the prompt (default: the model's own chat_template, else idefics).",
                               discussion: "idefics: 'User: ...', 'Assistant:' turns, for instruct models; plain: the contents back to back, for base models such as models/demo; anything else: a Jinja template file (FILE.jinja, or a JSON file with \"chat_template\").",
                               valueName: "idefics|plain|FILE"))
    var chatTemplate: String?

    @Option(name: .customLong("max-body-size"), help: "Largest request body, images included (e.g. 32MiB).")
    var maxBodySize = "32MiB"

    @Option(name: .customLong("max-images"), help: "Most images in one request.")
    var maxImages = 16

    @Option(name: .customLong("max-image-pixels"), help: "Largest image, width x height, checked before decoding.")
    var maxImagePixels = 4096 * 4096

    @Option(name: .customLong("max-prompt-tokens"), help: "Longest prompt in tokens (default: the model's context).")
    var maxPromptTokens: Int?

    @Option(name: .customLong("max-completion-tokens"),
            help: "Most tokens a request may ask for (max_tokens), and what it gets when it does not say.")
    var maxCompletionTokens = 1024

    @Option(name: .customLong("max-queue"), help: "Most requests waiting for the engine; more are refused with 429.")
    var maxQueue = 64

    @Option(name: .customLong("request-timeout"), help: "Seconds a request may take, queueing included, before it is cancelled.")
    var requestTimeout: Double = 600

    @Option(name: .customLong("shutdown-grace"), help: "Seconds requests in flight get to finish after SIGTERM.")
    var shutdownGrace: Double = 30

    func serverConfiguration() throws -> ServerConfiguration {
        var c = ServerConfiguration()
        c.host = host
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        c.port = port
        let key = apiKey ?? ProcessInfo.processInfo.environment["FLAMINGO_API_KEY"]
        c.apiKey = (key?.isEmpty ?? true) ? nil : key
        c.servedModelName = servedModelName
        c.allowLocalFiles = allowLocalFiles
        c.chatTemplate = ChatTemplateSelection(argument: chatTemplate)
        if case .file(let url) = c.chatTemplate {
            // Parse now, so a bad template is one line before any model loads.
            do {
                let text = try ModelChatTemplate.text(contentsOf: url)
                _ = try ModelChatTemplate(text: text, origin: url.path, specialTokens: [])
            } catch {
                throw ValidationError("--chat-template: \(error.errorDescription ?? "\(error)")")
            }
        }
        guard let body = parseByteSize(maxBodySize) else { throw ValidationError("--max-body-size: cannot read '\(maxBodySize)'") }
        c.limits.maxBodyBytes = body
        guard maxImages >= 0 else { throw ValidationError("--max-images must be at least 0") }
        c.limits.maxImagesPerRequest = maxImages
        guard maxImagePixels >= 1 else { throw ValidationError("--max-image-pixels must be at least 1") }
        c.limits.maxImagePixels = maxImagePixels
        if let n = maxPromptTokens, n < 1 { throw ValidationError("--max-prompt-tokens must be at least 1") }
        c.limits.maxPromptTokens = maxPromptTokens
        guard maxCompletionTokens >= 1 else { throw ValidationError("--max-completion-tokens must be at least 1") }
        c.limits.maxCompletionTokens = maxCompletionTokens
        guard maxQueue >= 0 else { throw ValidationError("--max-queue must be at least 0") }
        guard requestTimeout > 0, requestTimeout.isFinite else { throw ValidationError("--request-timeout must be positive") }
        c.limits.requestTimeout = .milliseconds(Int64(requestTimeout * 1000))
        guard shutdownGrace >= 0, shutdownGrace.isFinite else { throw ValidationError("--shutdown-grace must be at least 0") }
        c.shutdownGrace = .milliseconds(Int64(shutdownGrace * 1000))
        return c
    }
}
