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
        Under mpirun, send SIGUSR1 to mpirun for the same clean stop (mpirun forwards SIGUSR1; Open MPI's
        mpirun itself exits 1 on SIGTERM whatever the ranks do).

        --supervise: run outside MPI as the front process. It launches the pipeline
        (mpirun -np N [--hostfile FILE] [--mpirun-arg ARG ...] flamingo serve ...), serves the HTTP API
        itself, passes requests to rank 0, and launches the pipeline again when a rank or mpirun dies.
        """
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pipelineOptions: PipelineCommandOptions
    @OptionGroup var serveOptions: ServeOptions
    @OptionGroup var superviseOptions: SuperviseOptions

    func validate() throws {
        _ = try serveOptions.serverConfiguration()
        try superviseOptions.validate()
    }

    func run() async throws {
        let configuration = try serveOptions.serverConfiguration()
        if superviseOptions.supervise {
            try await runSupervised(configuration: configuration)
            return
        }
        let exitOnStdinClose = serveOptions.exitOnStdinClose
        try await runServing(pipelineOptions: pipelineOptions, modelOptions: modelOptions, maxQueued: serveOptions.maxQueue) { engine in
            if exitOnStdinClose { stopWhenStandardInputCloses() }
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

extension ServeCommand {
    /// `--supervise`: this process serves HTTP and keeps the pipeline (a child mpirun) running.
    func runSupervised(configuration: ServerConfiguration) async throws {
        let command = try superviseOptions.pipelineCommand(serveArguments: Array(CommandLine.arguments.dropFirst()))
        let logger = serverLogger()
        let supervisor = PipelineSupervisor(options: .init(command: command), logger: logger)
        let modelID = configuration.servedModelName ?? modelOptions.modelURL.standardizedFileURL.lastPathComponent
        let server = SupervisedServer(supervisor: supervisor, configuration: configuration, modelID: modelID,
                                      maxWaiting: serveOptions.maxQueue, logger: logger)
        FileHandle.standardError.write(Data("supervising: \(command.joined(separator: " "))\n".utf8))
        try await server.run { port in
            FileHandle.standardError.write(Data(
                "supervisor listening on http://\(configuration.host):\(port)/v1 (/health answers 503 until the pipeline serves)\n".utf8))
        }
    }
}

/// `flamingo serve --supervise` options: how the supervisor launches the pipeline.
struct SuperviseOptions: ParsableArguments {
    @Flag(name: .customLong("supervise"),
          help: "Run outside MPI: launch the pipeline under mpirun, serve HTTP here, relaunch the pipeline when it dies.")
    var supervise = false

    @Option(name: .customLong("np"), help: "With --supervise: ranks to launch (mpirun -np).")
    var ranks: Int?

    @Option(name: .customLong("hostfile"), help: "With --supervise: mpirun's hostfile; rank 0 (the API) runs on its first host.")
    var hostfile: String?

    @Option(name: .customLong("mpirun"), help: "With --supervise: the mpirun to run.")
    var mpirun = "mpirun"

    @Option(name: .customLong("mpirun-arg"), parsing: .unconditionalSingleValue,
            help: "With --supervise: one more argument for mpirun (repeat it; e.g. --mpirun-arg --oversubscribe).")
    var mpirunArguments: [String] = []

    @Option(name: .customLong("launch"),
            help: "With --supervise, instead of mpirun: a shell command template that starts the pipeline, {serve} standing for the flamingo serve command (e.g. 'srun -n 4 {serve}').")
    var launchTemplate: String?

    @Option(name: .customLong("pipeline-host"),
            help: "With --supervise: the host rank 0 serves on (default: the hostfile's first host, else 127.0.0.1).")
    var pipelineHostOption: String?

    func validate() throws {
        guard supervise else {
            if ranks != nil || hostfile != nil || !mpirunArguments.isEmpty || launchTemplate != nil || pipelineHostOption != nil {
                throw ValidationError("--np, --hostfile, --mpirun-arg, --launch and --pipeline-host are for --supervise")
            }
            return
        }
        if let launchTemplate {
            guard launchTemplate.contains("{serve}") else { throw ValidationError("--launch: the template has no {serve}") }
            guard ranks == nil, hostfile == nil, mpirunArguments.isEmpty else {
                throw ValidationError("--launch replaces mpirun: --np, --hostfile and --mpirun-arg go into its template")
            }
            return
        }
        guard let ranks, ranks >= 1 else { throw ValidationError("--supervise needs --np N (N >= 1): the ranks to launch") }
        _ = ranks
        if let hostfile, !FileManager.default.isReadableFile(atPath: hostfile) {
            throw ValidationError("--hostfile \(hostfile): cannot read it")
        }
        if ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil {
            throw ValidationError("--supervise runs outside mpirun (it starts mpirun itself)")
        }
    }

    /// Options of the supervisor alone, with whether each takes a value; the pipeline gets the rest.
    static let ownOptions: [String: Bool] = ["--supervise": false, "--np": true, "--hostfile": true, "--mpirun": true,
                                             "--mpirun-arg": true, "--host": true, "--port": true, "--launch": true,
                                             "--pipeline-host": true]

    /// The pipeline's command: mpirun [ARGS] -np N [--hostfile F] <this binary> serve <the serve
    /// options given here, less the supervisor's own> --host H --port 0 (H: the hostfile's first host, else loopback).
    func pipelineCommand(serveArguments: [String]) throws -> [String] {
        var rest = serveArguments
        if rest.first == "serve" { rest.removeFirst() }
        var passed: [String] = []
        var i = 0
        while i < rest.count {
            let argument = rest[i]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            if let takesValue = Self.ownOptions[name] {
                i += takesValue && !argument.contains("=") ? 2 : 1
                continue
            }
            passed.append(argument)
            i += 1
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let serve = [executable, "serve"] + passed + ["--host", try pipelineHost(), "--port", "0", "--exit-on-stdin-close"]
        if let launchTemplate {
            let quoted = serve.map(Self.shellQuoted).joined(separator: " ")
            return ["/bin/sh", "-c", "exec " + launchTemplate.replacingOccurrences(of: "{serve}", with: quoted)]
        }
        var command = [mpirun] + mpirunArguments + ["-np", String(ranks ?? 1)]
        if let hostfile { command += ["--hostfile", hostfile] }
        return command + serve
    }

    /// 'text' for /bin/sh.
    static func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// Where rank 0 serves: --pipeline-host, else the hostfile's first host (mpirun puts rank 0 there), else this machine.
    func pipelineHost() throws -> String {
        if let pipelineHostOption { return pipelineHostOption }
        guard let hostfile else { return "127.0.0.1" }
        let text = try String(contentsOfFile: hostfile, encoding: .utf8)
        for line in text.split(separator: "\n") {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if let host = content.split(whereSeparator: { $0 == " " || $0 == "\t" }).first { return String(host) }
        }
        throw ValidationError("--hostfile \(hostfile) names no host")
    }
}

/// Rank 0 (the only rank mpirun gives stdin): at EOF, SIGUSR1 to this process, the graceful stop.
func stopWhenStandardInputCloses() {
    let thread = Thread {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let n = read(0, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
        }
        FileHandle.standardError.write(Data("standard input closed (the supervisor is gone): stopping\n".utf8))
        kill(getpid(), SIGUSR1)
    }
    thread.name = "stdin-lifeline"
    thread.start()
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

    @Option(name: .customLong("idle-timeout"),
            help: "Seconds a connection may send nothing (before a request, between requests, or while sending one) before it is closed.")
    var idleTimeout: Double = 60

    @Option(name: .customLong("max-connections"),
            help: "Most connections open at once (more wait to be accepted); lowered to what the open-file limit allows.")
    var maxConnections = 4096

    @Flag(name: .customLong("exit-on-stdin-close"),
          help: "Stop gracefully (as on SIGTERM) when standard input closes (the supervisor's lifeline to its pipeline).")
    var exitOnStdinClose = false

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
        guard idleTimeout > 0, idleTimeout.isFinite else { throw ValidationError("--idle-timeout must be positive") }
        c.limits.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        c.maxConnections = maxConnections
        return c
    }
}
