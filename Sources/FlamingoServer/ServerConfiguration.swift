import Foundation

/// What the operator sets on `flamingo serve`.
public struct ServerConfiguration: Sendable {
    /// Address to bind: loopback unless the operator says otherwise.
    public var host: String = "127.0.0.1"
    /// 0 picks a free port (tests).
    public var port: Int = 8080
    /// When set, every /v1 request needs `Authorization: Bearer <apiKey>`. /health and /metrics stay open.
    public var apiKey: String?
    /// The model id clients name; nil: the model directory's name.
    public var servedModelName: String?
    /// Accept `file://` image URLs naming files on the server.
    public var allowLocalFiles: Bool = false
    /// How messages become the prompt: by default the model's own chat template, else the
    /// built-in idefics style (`ChatTemplateSelection`).
    public var chatTemplate: ChatTemplateSelection = .model(fallback: .idefics)
    public var limits = ServerLimits()
    /// Most connections open at once; past it the server accepts no more until some close (they
    /// wait in the listen backlog). Lowered at start-up to what the open-file limit allows.
    public var maxConnections: Int = 4096
    /// On SIGTERM/SIGINT: how long requests in flight may take to finish before they are cut off.
    public var shutdownGrace: Duration = .seconds(30)

    public init() {}
}

/// Per-request limits. The engine's queue length is the engine's own (429 when full).
public struct ServerLimits: Sendable, Equatable {
    /// Largest request body (base64 images included).
    public var maxBodyBytes: Int = 32 << 20
    public var maxImagesPerRequest: Int = 16
    /// Largest image, in pixels (width x height), checked before it is decoded.
    public var maxImagePixels: Int = 4096 * 4096
    /// Longest prompt in tokens; nil: the model's context less one.
    public var maxPromptTokens: Int?
    /// Most tokens a request may ask for (also the default when it does not say).
    public var maxCompletionTokens: Int = 1024
    /// Longest a request may take, queueing included; it is then cancelled (HTTP 504, or an error
    /// event when streaming).
    public var requestTimeout: Duration = .seconds(600)
    /// A connection that sends nothing for this long is closed: before its first request, between
    /// requests, or in the middle of sending one (headers or body). Not while its response is
    /// being computed or streamed.
    public var idleTimeout: Duration = .seconds(60)
    /// After a response sent before its request's body arrived (413, 401...), the rest of the body is
    /// read and discarded, so that a client still sending gets to read the response, for at most
    /// `lingerTime`, or until `lingerTimeout` passes without data; then the connection closes
    /// (nginx's `lingering_time` and `lingering_timeout`, with its defaults).
    public var lingerTime: Duration = .seconds(30)
    public var lingerTimeout: Duration = .seconds(5)

    public init() {}
}
