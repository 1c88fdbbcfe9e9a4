import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// What Hummingbird 2.28 leaves out for request bodies, as a handler in each connection's pipeline
/// between the HTTP codec and Hummingbird (`HTTP1Channel`'s additional channel handlers).
///
/// - `Expect: 100-continue`: answered with `100 Continue` when the declared length is within the
///   limit (or the body is chunked), so that curl and others send the body at once instead of
///   waiting a second for an answer. With a declared length over the limit there is no 100: the
///   route answers 413 before reading anything, and a client that asked never sends the body.
/// - A body over the limit (declared by Content-Length, or chunked and growing past it): the part
///   that crosses the limit is still passed on, so that the route collecting the body sees it and
///   answers 413; the rest is read here and thrown away.
/// - A response that ends before its request's body has arrived (the 413s above, a 401 or 404 sent
///   without reading the body): it says `Connection: close`, and then the connection closes the way
///   nginx's lingering close does: the write side is shut (the client reads the response, then end
///   of stream) and the rest of the body is read and discarded until the client closes, or
///   `lingerTimeout` passes with nothing arriving, or `lingerTime` in all. Closing at once would make
///   a client that is still sending (urllib, requests, httpx) get a reset instead of the response;
///   leaving the body unread (what Hummingbird does) leaves such a client blocked on a full socket
///   buffer until its own timeout.
///
/// Idle connections are not this handler's business: `HTTP1Channel`'s idle timeout closes them.
final class RequestBodyGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limit: Int
    private let lingerTime: TimeAmount
    private let lingerTimeout: TimeAmount

    /// Requests whose head has arrived, and whose end has arrived (or was discarded), on this connection.
    private var requestsStarted = 0
    private var requestsEnded = 0
    /// Final responses whose end has been written.
    private var responsesEnded = 0
    /// Body bytes of the request being received.
    private var bodyBytes = 0
    /// The rest of the current request (and anything after it) is read and dropped; the connection
    /// closes after the current response.
    private var discarding = false
    /// The response being written ends the connection (it said `Connection: close`).
    private var closeAfterResponse = false
    private var lingering = false
    private var lastRead = NIODeadline.now()
    private var lingerDeadline: Scheduled<Void>?
    private var quietCheck: Scheduled<Void>?

    /// - Parameters:
    ///   - limit: largest request body in bytes.
    ///   - lingerTime: longest a refused body is read and discarded before the connection closes.
    ///   - lingerTimeout: ...or how long without any of it arriving.
    init(limit: Int, lingerTime: TimeAmount, lingerTimeout: TimeAmount) {
        self.limit = limit
        self.lingerTime = lingerTime
        self.lingerTimeout = lingerTimeout
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lingering {
            lastRead = .now()
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            // A request pipelined behind one whose body is being dropped is never answered: the
            // connection closes after the current response.
            if discarding { return }
            requestsStarted += 1
            bodyBytes = 0
            let declared = head.headerFields[.contentLength].flatMap { Int($0) }
            if let declared, declared > limit {
                discarding = true
            } else if Self.expectsContinue(head) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
            context.fireChannelRead(data)
            if discarding { context.read() }
        case .body(let buffer):
            if discarding { return }
            bodyBytes += buffer.readableBytes
            context.fireChannelRead(data)
            if bodyBytes > limit {
                discarding = true
                context.read()
            }
        case .end:
            requestsEnded = requestsStarted
            if discarding { return }
            context.fireChannelRead(data)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // What is dropped here never reaches Hummingbird, which therefore asks for no more reads:
        // keep reading for it, or the client blocks on a full socket buffer.
        if discarding || lingering { context.read() }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if lingering, let event = event as? ChannelEvent, event == .inputClosed {
            // The client has sent everything and closed its side: it has the response.
            close(context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // While lingering the bytes are not HTTP the server will answer (a parse error of a
        // dropped body, a reset): nothing to report, just close.
        if lingering {
            close(context)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
    }

    // MARK: - Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var response) where response.status.kind != .informational:
            // The response to request `responsesEnded + 1`: if that request's body has not all
            // arrived, or is being dropped, this connection cannot carry another request.
            if discarding || requestsEnded <= responsesEnded {
                closeAfterResponse = true
                response.headerFields[.connection] = "close"
                context.write(wrapOutboundOut(.head(response)), promise: promise)
                return
            }
            context.write(data, promise: promise)
        case .end where closeAfterResponse:
            responsesEnded += 1
            context.writeAndFlush(data, promise: promise)
            startLingering(context)
        case .end:
            responsesEnded += 1
            context.write(data, promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }

    // MARK: - Lingering close

    private func startLingering(_ context: ChannelHandlerContext) {
        guard !lingering else { return }
        lingering = true
        discarding = true
        lastRead = .now()
        // FIN after the response; the read side stays open for the rest of the body. (Hummingbird
        // may have shut the write side already: then this fails, harmlessly.)
        context.close(mode: .output, promise: nil)
        let loop = context.eventLoop.assumeIsolated()
        lingerDeadline = loop.scheduleTask(in: lingerTime) { [self] in close(context) }
        scheduleQuietCheck(context, in: lingerTimeout)
        context.read()
    }

    private func scheduleQuietCheck(_ context: ChannelHandlerContext, in delay: TimeAmount) {
        quietCheck = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            let quiet = NIODeadline.now() - lastRead
            if quiet >= lingerTimeout {
                close(context)
            } else {
                scheduleQuietCheck(context, in: lingerTimeout - quiet)
            }
        }
    }

    private func close(_ context: ChannelHandlerContext) {
        cancelTimers()
        context.close(promise: nil)
    }

    private func cancelTimers() {
        lingerDeadline?.cancel()
        lingerDeadline = nil
        quietCheck?.cancel()
        quietCheck = nil
    }

    /// `Expect: 100-continue` (the only expectation HTTP/1.1 defines; others pass through unanswered).
    static func expectsContinue(_ head: HTTPRequest) -> Bool {
        head.headerFields[values: .expect].contains { value in
            value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "100-continue" }
        }
    }
}

@available(*, unavailable)
extension RequestBodyGate: Sendable {}
