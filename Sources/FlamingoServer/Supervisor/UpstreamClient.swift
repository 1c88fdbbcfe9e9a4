import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 client for the supervisor's one upstream, the pipeline's own server on rank
/// 0: one connection per request, the request written whole, the response's head returned as soon
/// as it arrives and its body as a stream of pieces (so streamed completions pass through as they
/// are generated).
struct UpstreamClient: Sendable {
    let host: String
    let port: Int

    struct Response: Sendable {
        var status: Int
        var headers: [(name: String, value: String)]
        /// The body's pieces; ends with an error when the connection breaks before the end.
        var body: AsyncThrowingStream<ByteBuffer, Error>
        /// Closes the connection (the body's consumer went away).
        var close: @Sendable () -> Void

        func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }

        /// The whole body, at most `limit` bytes.
        func collect(upTo limit: Int) async throws -> ByteBuffer {
            var all = ByteBuffer()
            for try await var piece in body {
                guard all.readableBytes + piece.readableBytes <= limit else { throw UpstreamError.tooLarge }
                all.writeBuffer(&piece)
            }
            return all
        }
    }

    /// Sends one request; returns once the response's head has arrived.
    /// - Throws: `UpstreamError` when the upstream cannot be reached or closes before answering,
    ///   or `timeout` passes first.
    func send(method: String, uri: String, headers: [(name: String, value: String)], body: ByteBuffer?,
              timeout: Duration) async throws -> Response {
        let (parts, continuation) = AsyncThrowingStream<HTTPClientResponsePart, Error>.makeStream()
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(min(timeout, .seconds(10)).components.seconds * 1000 + 1)))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseForwarder(continuation))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw UpstreamError.unreachable("\(host):\(port): \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: uri)
        for (name, value) in headers where !Self.hopByHop.contains(name.lowercased()) && name.lowercased() != "host" {
            head.headers.add(name: name, value: value)
        }
        head.headers.replaceOrAdd(name: "Host", value: "\(host):\(port)")
        head.headers.replaceOrAdd(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        head.headers.replaceOrAdd(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, body.readableBytes > 0 { channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let close: @Sendable () -> Void = { channel.close(promise: nil) }

        // The head, within the timeout: a timer on the channel's event loop, which a cancel
        // removes at once (a cancelled Task.sleep keeps its timer, and its memory, until the
        // deadline: with a 600 s request timeout that was ~0.7 KB per request for 10 minutes).
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000
                                                                    + timeout.components.attoseconds / 1_000_000_000)) {
            continuation.finish(throwing: UpstreamError.timedOut(timeout))
            close()
        }
        var iterator = parts.makeAsyncIterator()
        let first: HTTPClientResponsePart?
        do {
            first = try await iterator.next()
        } catch {
            timer.cancel()
            close()
            throw error as? UpstreamError ?? UpstreamError.closed("\(error)")
        }
        timer.cancel()
        guard case .head(let responseHead) = first else {
            close()
            throw UpstreamError.closed("the connection closed before a response")
        }
        let (body, bodyContinuation) = AsyncThrowingStream<ByteBuffer, Error>.makeStream()
        let pump = UncheckedIterator(iterator)
        Task {
            var iterator = pump.value
            do {
                while let part = try await iterator.next() {
                    switch part {
                    case .body(let piece): bodyContinuation.yield(piece)
                    case .end: bodyContinuation.finish(); close(); return
                    case .head: break
                    }
                }
                bodyContinuation.finish(throwing: UpstreamError.closed("the connection closed mid-response"))
            } catch {
                bodyContinuation.finish(throwing: error as? UpstreamError ?? UpstreamError.closed("\(error)"))
            }
            close()
        }
        bodyContinuation.onTermination = { _ in close() }
        return Response(status: Int(responseHead.status.code),
                        headers: responseHead.headers.map { ($0.name, $0.value) }, body: body, close: close)
    }

    /// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), and the framing ones.
    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "te", "trailer",
                                        "transfer-encoding", "upgrade", "expect", "content-length"]
}

public enum UpstreamError: Error, LocalizedError, Equatable {
    case unreachable(String)
    case closed(String)
    case timedOut(Duration)
    case tooLarge

    public var errorDescription: String? {
        switch self {
        case .unreachable(let why): "the pipeline's server is not reachable: \(why)"
        case .closed(let why): "the pipeline's server went away: \(why)"
        case .timedOut(let t): "the pipeline's server did not answer within \(t)"
        case .tooLarge: "the pipeline's answer is too large"
        }
    }
}

/// Passes each response part of the connection on to an async stream.
private final class ResponseForwarder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let continuation: AsyncThrowingStream<HTTPClientResponsePart, Error>.Continuation

    init(_ continuation: AsyncThrowingStream<HTTPClientResponsePart, Error>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        continuation.yield(part)
        if case .end = part { continuation.finish() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish(throwing: UpstreamError.closed("the connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        continuation.finish(throwing: UpstreamError.closed("\(error)"))
        context.close(promise: nil)
    }
}

/// An async iterator handed to the one task that goes on reading it.
private struct UncheckedIterator<I>: @unchecked Sendable {
    var value: I
    init(_ value: I) { self.value = value }
}
