import FlamingoCore
import FlamingoCluster
import FlamingoModel
import FlamingoServer
import Foundation
import Logging
import ServiceLifecycle
import Testing

#if canImport(Glibc)
import Glibc
#endif

enum Fixtures {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let models = repo.appendingPathComponent("Tests/Fixtures/models")
    static let images = models.appendingPathComponent("images")

    static func directory(_ name: String = "interval1") throws -> ModelDirectory {
        try ModelDirectory(models.appendingPathComponent(name))
    }

    static func imageData(_ name: String) throws -> Data {
        try Data(contentsOf: images.appendingPathComponent(name))
    }

    static func dataURL(_ name: String) throws -> String {
        let mime = name.hasSuffix(".jpg") ? "image/jpeg" : "image/png"
        return "data:\(mime);base64," + (try imageData(name)).base64EncodedString()
    }
}

/// An engine that "generates" a fixed token sequence, one token every `delay`, and records what
/// happened to each request: the HTTP layer's test double.
final class ScriptedEngine: GenerationEngine, @unchecked Sendable {
    let directory: ModelDirectory
    let tokens: [Int]
    let finishReason: FinishReason
    let delay: Duration
    let queueLimit: Int

    struct Log {
        var submitted: [GenerationRequest] = []
        var cancelled = 0
        var finished = 0
        var active = 0
        var shutdownCalled = false
    }
    let log = Locked(Log())
    let readyFlag = Locked(true)
    private var tasks = Locked<[Task<Void, Never>]>([])

    init(directory: ModelDirectory, tokens: [Int], finishReason: FinishReason = .length, delay: Duration = .milliseconds(1),
         queueLimit: Int = 100) {
        self.directory = directory
        self.tokens = tokens
        self.finishReason = finishReason
        self.delay = delay
        self.queueLimit = queueLimit
    }

    /// The engine for text: the tokens of `text` under the fixture tokenizer.
    convenience init(text: String, finishReason: FinishReason = .length, delay: Duration = .milliseconds(1),
                     queueLimit: Int = 100) throws {
        let directory = try Fixtures.directory()
        self.init(directory: directory, tokens: directory.tokenizer!.encode(text, addSpecialTokens: false),
                  finishReason: finishReason, delay: delay, queueLimit: queueLimit)
    }

    var status: EngineStatus {
        let log = self.log.withLock { $0 }
        return EngineStatus(ready: readyFlag.withLock { $0 }, queued: 0, active: log.active, stageBusySeconds: [1: 0.5, 2: 0.25])
    }

    func submit(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, any Error> {
        _ = try request.validate(config: directory.config, imageTokenID: directory.imageTokenID)  // as engines do at admission
        guard readyFlag.withLock({ $0 }) else { throw EngineError.unavailable("loading") }
        try log.withLock { log in
            guard log.active < queueLimit else { throw EngineError.queueFull(limit: queueLimit) }
            log.submitted.append(request)
            log.active += 1
        }
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let tokens = Array(self.tokens.prefix(request.maxTokens))
        let reason: FinishReason = tokens.count < self.tokens.count ? .length : finishReason
        let delay = self.delay
        let task = Task {
            for token in tokens {
                try? await Task.sleep(for: delay)
                if Task.isCancelled { break }
                continuation.yield(.token(token))
            }
            if !Task.isCancelled {
                continuation.yield(.finished(reason, promptTokens: request.promptTokens.count, completionTokens: tokens.count))
                continuation.finish()
            }
        }
        continuation.onTermination = { [log] termination in
            task.cancel()
            log.withLock { log in
                log.active -= 1
                if case .cancelled = termination { log.cancelled += 1 } else { log.finished += 1 }
            }
        }
        return stream
    }

    func shutdown(grace: Duration) async {
        log.withLock { $0.shutdownCalled = true }
        let deadline = ContinuousClock.now + grace
        while log.withLock({ $0.active }) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Warnings and errors only.
let quietLogger: Logger = {
    var logger = Logger(label: "flamingo.server.test")
    logger.logLevel = .warning
    return logger
}()

/// A server on a free loopback port for the duration of `body`.
func withServer<T: Sendable>(_ engine: any GenerationEngine, configure: (inout ServerConfiguration) -> Void = { _ in },
                             _ body: @Sendable (OpenAIServer, TestClient) async throws -> T) async throws -> T {
    var configuration = ServerConfiguration()
    configuration.port = 0
    configuration.shutdownGrace = .seconds(2)
    configure(&configuration)
    let server = try OpenAIServer(engine: engine, configuration: configuration, logger: quietLogger)
    let (ports, portContinuation) = AsyncStream<Int>.makeStream()
    let group = ServiceGroup(configuration: .init(
        services: [server.service { port in portContinuation.yield(port) }], logger: server.logger))
    return try await withThrowingTaskGroup(of: T?.self) { tasks in
        tasks.addTask {
            try await group.run()
            return nil
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestClient.Failure("server did not start") }
        let result = try await body(server, TestClient(port: port))
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return result
    }
}

/// A minimal blocking HTTP/1.1 client over a socket (one request per connection), run on a thread
/// of its own so that tests never block Swift concurrency's few threads.
struct TestClient: Sendable {
    let port: Int

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    struct Response: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func json() throws -> JSON { try JSON.parse(body) }
        /// The `data:` payloads of a server-sent event stream.
        var events: [String] {
            text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map {
                $0.hasPrefix("data: ") ? String($0.dropFirst(6)) : "<not data: \($0)>"
            }
        }
    }

    func post(_ path: String, json: String, headers: [String: String] = [:]) async throws -> Response {
        try await request("POST", path, body: Data(json.utf8), headers: ["Content-Type": "application/json"].merging(headers) { $1 })
    }

    func get(_ path: String, headers: [String: String] = [:]) async throws -> Response {
        try await request("GET", path, body: nil, headers: headers)
    }

    func request(_ method: String, _ path: String, body: Data?, headers: [String: String] = [:]) async throws -> Response {
        let port = self.port
        return try await onThread {
            let socket = try Self.connect(port: port)
            defer { close(socket) }
            try Self.send(socket, Self.requestBytes(method, path, body: body, headers: headers))
            return try Self.parse(Self.readAll(socket))
        }
    }

    /// Sends a request, reads until `until` returns true for what has arrived, then closes the connection.
    func requestThenDisconnect(_ method: String, _ path: String, json: String, until: @escaping @Sendable (String) -> Bool) async throws -> String {
        let port = self.port
        return try await onThread {
            let socket = try Self.connect(port: port)
            defer { close(socket) }
            try Self.send(socket, Self.requestBytes(method, path, body: Data(json.utf8), headers: ["Content-Type": "application/json"]))
            var received = Data()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !until(String(decoding: received, as: UTF8.self)) {
                let n = recv(socket, &buffer, buffer.count, 0)
                if n <= 0 { break }
                received.append(contentsOf: buffer[0..<n])
            }
            return String(decoding: received, as: UTF8.self)
        }
    }

    private static func requestBytes(_ method: String, _ path: String, body: Data?, headers: [String: String]) -> Data {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        var data = Data(head.utf8)
        if let body { data.append(body) }
        return data
    }

    private func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.start()
        }
    }

    private static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { close(fd); throw Failure("connect to port \(port) failed") }
        return fd
    }

    private static func send(_ fd: Int32, _ data: Data) throws {
        var offset = 0
        try data.withUnsafeBytes { raw in
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { throw Failure("send failed after \(offset) bytes") }
                offset += n
            }
        }
    }

    private static func readAll(_ fd: Int32) throws -> Data {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 { throw Failure("recv failed (timeout?)") }
            if n == 0 { break }
            data.append(contentsOf: buffer[0..<n])
        }
        return data
    }

    static func parse(_ data: Data) throws -> Response {
        let bytes = [UInt8](data)
        guard let split = bytes.indices.first(where: { i in i + 3 < bytes.count && bytes[i..<(i + 4)].elementsEqual([13, 10, 13, 10]) }) else {
            throw Failure("no HTTP head in \(String(decoding: data, as: UTF8.self))")
        }
        let head = String(decoding: bytes[..<split], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure("bad status line \(head[0])") }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(bytes[(split + 4)...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = try dechunk(body) }
        return Response(status: status, headers: headers, body: Data(body))
    }

    private static func dechunk(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            guard let lineEnd = (i..<(bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else { break }
            let sizeText = String(decoding: bytes[i..<lineEnd], as: UTF8.self).split(separator: ";")[0]
            guard let size = Int(sizeText, radix: 16) else { throw Failure("bad chunk size '\(sizeText)'") }
            if size == 0 { break }
            let start = lineEnd + 2
            guard start + size <= bytes.count else { throw Failure("truncated chunk") }
            out += bytes[start..<(start + size)]
            i = start + size + 2
        }
        return out
    }
}

/// A chat request body with one user message.
func chatBody(_ text: String = "Hi", model: String? = nil, extra: String = "") -> String {
    var fields = [#""messages": [{"role": "user", "content": \#(JSON.string(text).serializedString)}]"#]
    if let model { fields.append(#""model": "\#(model)""#) }
    if !extra.isEmpty { fields.append(extra) }
    return "{" + fields.joined(separator: ", ") + "}"
}
