import FlamingoServer
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// The connection-level handling of request bodies (RequestBodyGate) and idle connections, over
// raw loopback sockets: `Expect: 100-continue`, a 413 that a client still sending gets to read,
// the lingering close after it, and the idle timeout. Bounds on time are only "no hang" bounds:
// each socket gives up after 10 s, far past what any answer here takes.

private let limit = 64 << 10

private func configure(_ c: inout ServerConfiguration) {
    c.limits.maxBodyBytes = limit
}

@Test func expectContinueIsAnsweredBeforeTheBodyIsSent() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there.")) { _, client in
        let (interim, response) = try await blocking {
            let body = Data(chatBody("Hello").utf8)
            let c = try RawConnection(port: client.port)
            try c.send(head(contentLength: body.count, extra: ["Expect: 100-continue"]))
            let interim = try c.receiveHead()
            try c.send(body)
            return (interim, try TestClient.parse(c.receiveToEnd().data))
        }
        #expect(interim == "HTTP/1.1 100 Continue\r\n\r\n")
        #expect(response.status == 200, "\(response.text)")
    }
}

@Test func declaredTooLargeGetsNoContinueButA413AndTheEndOfTheStream() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there."), configure: configure) { _, client in
        let (response, ended) = try await blocking {
            let c = try RawConnection(port: client.port)
            try c.send(head(contentLength: limit + 1, extra: ["Expect: 100-continue"]))
            let (data, ended) = c.receiveToEnd()
            return (try TestClient.parse(data), ended)
        }
        #expect(response.status == 413, "\(response.text)")
        #expect(response.headers["connection"] == "close")
        #expect(try response.json()["error"]?["code"] == "request_too_large")
        #expect(ended, "the server shuts its side after the 413")
    }
}

/// urllib's case: no Expect, the whole (oversized) body written before the response is read.
@Test func aClientStillSendingAnOversizedBodyReadsThe413() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there."), configure: configure) { _, client in
        let (response, ended) = try await blocking {
            let size = 16 << 20  // far more than the socket buffers hold
            let c = try RawConnection(port: client.port)
            try c.send(head(contentLength: size) + Data(repeating: 0x20, count: size))
            let (data, ended) = c.receiveToEnd()
            return (try TestClient.parse(data), ended)
        }
        #expect(response.status == 413, "\(response.text)")
        #expect(response.headers["connection"] == "close")
        #expect(ended)
    }
}

@Test func aChunkedBodyGrowingPastTheLimitIs413() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there."), configure: configure) { _, client in
        let (response, ended) = try await blocking {
            let c = try RawConnection(port: client.port)
            var request = Data("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            let piece = Data(repeating: 0x20, count: 16 << 10)
            for _ in 0..<256 {  // 4 MiB against 64 KiB
                request += Data((String(piece.count, radix: 16) + "\r\n").utf8) + piece + Data("\r\n".utf8)
            }
            request += Data("0\r\n\r\n".utf8)
            try c.send(request)
            let (data, ended) = c.receiveToEnd()
            return (try TestClient.parse(data), ended)
        }
        #expect(response.status == 413, "\(response.text)")
        #expect(response.headers["connection"] == "close")
        #expect(try response.json()["error"]?["code"] == "request_too_large")
        #expect(ended)
    }
}

/// After the 413 the rest of the body is read for `lingerTimeout` after the last byte, then closed.
@Test func aRefusedClientThatGoesQuietIsClosedAfterTheLingerTimeout() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there."), configure: {
        configure(&$0)
        $0.limits.lingerTimeout = .milliseconds(300)
    }) { _, client in
        let (response, ended, closed, elapsed) = try await blocking {
            let c = try RawConnection(port: client.port)
            let start = ContinuousClock.now
            try c.send(head(contentLength: 8 << 20) + Data(repeating: 0x20, count: 1 << 20))  // then nothing
            let (data, ended) = c.receiveToEnd()
            // The response is followed by the end of the stream (the server's write side shut);
            // the server's read side closing shows as a write that fails.
            let closed = c.sendUntilRefused(Data(repeating: 0x20, count: 1024), every: .milliseconds(500))
            return (try TestClient.parse(data), ended, closed, ContinuousClock.now - start)
        }
        #expect(response.status == 413)
        #expect(ended)
        #expect(closed, "the server still reads after 10 s")
        #expect(elapsed >= .milliseconds(300))
    }
}

/// A refused client that keeps sending slowly is closed after `lingerTime` in all.
@Test func aRefusedClientThatKeepsSendingIsClosedAfterTheLingerTime() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there."), configure: {
        configure(&$0)
        $0.limits.lingerTime = .seconds(1)
    }) { _, client in
        let (response, closed, elapsed) = try await blocking {
            let c = try RawConnection(port: client.port)
            let start = ContinuousClock.now
            try c.send(head(contentLength: 1 << 30))
            let (data, _) = c.receiveToEnd(idle: .milliseconds(500))
            let closed = c.sendUntilRefused(Data(repeating: 0x20, count: 1024), every: .milliseconds(50))
            return (try TestClient.parse(data), closed, ContinuousClock.now - start)
        }
        #expect(response.status == 413)
        #expect(closed, "the server still reads after 10 s")
        #expect(elapsed >= .seconds(1))
    }
}

@Test func anIdleConnectionIsClosedAfterTheIdleTimeout() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there."), configure: { $0.limits.idleTimeout = .milliseconds(500) }) { _, client in
        let (silentEnded, stalledEnded, elapsed) = try await blocking {
            let silent = try RawConnection(port: client.port)
            let stalled = try RawConnection(port: client.port)
            try stalled.send(head(contentLength: 100))  // and no body
            let start = ContinuousClock.now
            let silentEnded = silent.receiveToEnd().ended
            let stalledEnded = stalled.receiveToEnd().ended
            return (silentEnded, stalledEnded, ContinuousClock.now - start)
        }
        #expect(silentEnded)
        #expect(stalledEnded)
        #expect(elapsed >= .milliseconds(450))
    }
}

@Test func keepAliveStillCarriesSeveralRequests() async throws {
    try await withServer(try ScriptedEngine(text: "Hi there.")) { server, client in
        let answers = try await blocking {
            let c = try RawConnection(port: client.port)
            var answers: [(TestClient.Response, String)] = []
            for _ in 0..<3 {
                try c.send(Data("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
                let head = try TestClient.parse(Data(try c.receiveHead().utf8))
                let body = try c.receive(exactly: Int(head.headers["content-length"] ?? "") ?? 0)
                answers.append((head, String(decoding: body, as: UTF8.self)))
            }
            return answers
        }
        #expect(answers.count == 3)
        for (head, body) in answers {
            #expect(head.status == 200)
            #expect(head.headers["connection"] == nil)
            #expect(body.contains(server.modelID))
        }
    }
}

// MARK: - Support

private func head(contentLength: Int, extra: [String] = []) -> Data {
    var text = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for line in extra { text += line + "\r\n" }
    text += "Content-Length: \(contentLength)\r\n\r\n"
    return Data(text.utf8)
}

/// Runs blocking socket code on a thread of its own.
private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// One blocking loopback connection; every receive gives up after 10 s.
private final class RawConnection {
    let fd: Int32
    private var pending = Data()

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        setTimeout(.seconds(10))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { close(fd); throw TestClient.Failure("connect to port \(port) failed") }
    }

    deinit { close(fd) }

    private func setTimeout(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ data: Data) throws {
        var offset = 0
        try data.withUnsafeBytes { raw in
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { throw TestClient.Failure("send failed after \(offset) of \(raw.count) bytes (errno \(errno))") }
                offset += n
            }
        }
    }

    /// Sends `data` every `every` until a send fails (the server closed); false after 10 s.
    func sendUntilRefused(_ data: Data, every: Duration) -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if (try? send(data)) == nil { return true }
            Thread.sleep(forTimeInterval: Double(every.components.attoseconds) / 1e18 + Double(every.components.seconds))
        }
        return false
    }

    /// Up to and including the first blank line.
    func receiveHead() throws -> String {
        while true {
            if let range = pending.range(of: Data("\r\n\r\n".utf8)) {
                let head = pending[..<range.upperBound]
                pending = Data(pending[range.upperBound...])
                return String(decoding: head, as: UTF8.self)
            }
            guard let chunk = receiveOnce(), !chunk.isEmpty else { throw TestClient.Failure("no head in \(String(decoding: pending, as: UTF8.self))") }
            pending += chunk
        }
    }

    func receive(exactly count: Int) throws -> Data {
        while pending.count < count {
            guard let chunk = receiveOnce(), !chunk.isEmpty else { throw TestClient.Failure("stream ended early") }
            pending += chunk
        }
        let out = pending.prefix(count)
        pending = Data(pending.dropFirst(count))
        return Data(out)
    }

    /// Everything until the server ends the stream (`ended`), or nothing arrives for `idle`.
    func receiveToEnd(idle: Duration = .seconds(10)) -> (data: Data, ended: Bool) {
        setTimeout(idle)
        defer { setTimeout(.seconds(10)) }
        var data = pending
        pending = Data()
        while true {
            guard let chunk = receiveOnce() else { return (data, false) }
            if chunk.isEmpty { return (data, true) }
            data += chunk
        }
    }

    /// nil on a timeout; empty at the end of the stream (or a reset).
    private func receiveOnce() -> Data? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        if n > 0 { return Data(buffer[0..<n]) }
        if n == 0 || errno == ECONNRESET { return Data() }
        return nil
    }
}
