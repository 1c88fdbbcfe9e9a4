import FlamingoCore

/// What a message asks its receiver to do. Raw values are pinned to `Kind` in
/// proto/flamingo.proto and must never change (the wire carries the number).
public enum MessageKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case hello = 1
    case plan = 2
    case visualTokens = 3
    case prefill = 4
    case decode = 5
    case logits = 6
    case cancel = 7
    case error = 8
    case shutdown = 9
    case heartbeat = 10
    case stats = 11
    case statsRequest = 12

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .plan: "PLAN"
        case .visualTokens: "VISUAL_TOKENS"
        case .prefill: "PREFILL"
        case .decode: "DECODE"
        case .logits: "LOGITS"
        case .cancel: "CANCEL"
        case .error: "ERROR"
        case .shutdown: "SHUTDOWN"
        case .heartbeat: "HEARTBEAT"
        case .stats: "STATS"
        case .statsRequest: "STATS_REQUEST"
        }
    }
}

/// The wire number of each element type (`DType` in proto/flamingo.proto), pinned.
extension DType {
    public var wireValue: UInt8 {
        switch self {
        case .f32: 1
        case .bf16: 2
        case .f16: 3
        case .i8: 0  // DTYPE_UNSPECIFIED: int8 weight values never travel, and a peer refuses it
        }
    }

    public init?(wireValue: Int) {
        switch wireValue {
        case 1: self = .f32
        case 2: self = .bf16
        case 3: self = .f16
        default: return nil
        }
    }
}

/// One sequence of a microbatch. Token-row tensors (hidden states `[T, C]`) hold the sequences'
/// tokens back to back in `Message.sequences` order, so `T == sequences.map(\.tokenCount).sum`.
public struct SequenceMeta: Sendable, Equatable {
    public var sequenceID: UInt64
    /// Position of this chunk's first token within its sequence (RoPE position, KV-cache slot).
    public var startPosition: Int
    public var tokenCount: Int
    /// Per token, the image it cross-attends to (prompt order), nil for none
    /// (`ImageAttention.imageIndices`). Empty, or exactly `tokenCount` entries.
    public var imageIndex: [Int?]
    /// Images of this sequence so far; every `imageIndex` entry is below it.
    public var imageCount: Int
    /// Token ids for the stage that owns the embeddings. Empty, or exactly `tokenCount` entries.
    public var tokenIDs: [Int]

    public init(sequenceID: UInt64, startPosition: Int, tokenCount: Int,
                imageIndex: [Int?] = [], imageCount: Int = 0, tokenIDs: [Int] = []) {
        self.sequenceID = sequenceID
        self.startPosition = startPosition
        self.tokenCount = tokenCount
        self.imageIndex = imageIndex
        self.imageCount = imageCount
        self.tokenIDs = tokenIDs
    }
}

/// A tensor with the name it travels under.
public struct NamedTensor: Sendable {
    public var name: String
    public var tensor: Tensor

    public init(_ name: String, _ tensor: Tensor) {
        self.name = name
        self.tensor = tensor
    }
}

/// One message between ranks: the Swift face of `Envelope` in proto/flamingo.proto.
/// Protobuf types never leave `Wire/`; everything else speaks `Message`.
public struct Message: Sendable {
    public var kind: MessageKind
    public var requestID: UInt64
    public var microbatchID: UInt32
    /// Decode step; 0 for prefill.
    public var step: UInt32
    public var sequences: [SequenceMeta]
    /// In order; names are unique and non-empty.
    public var tensors: [NamedTensor]
    public var errorMessage: String
    public var sourceRank: UInt32
    /// Set on HELLO (required there), nil otherwise.
    public var hello: Hello?
    /// Set on PLAN (required there), nil otherwise.
    public var plan: Plan?
    /// A rank's statistics (SHUTDOWN replies when asked for).
    public var stats: RankStats?

    public init(kind: MessageKind, requestID: UInt64 = 0, microbatchID: UInt32 = 0, step: UInt32 = 0,
                sequences: [SequenceMeta] = [], tensors: [NamedTensor] = [], errorMessage: String = "",
                sourceRank: UInt32 = 0, hello: Hello? = nil, plan: Plan? = nil, stats: RankStats? = nil) {
        self.kind = kind
        self.requestID = requestID
        self.microbatchID = microbatchID
        self.step = step
        self.sequences = sequences
        self.tensors = tensors
        self.errorMessage = errorMessage
        self.sourceRank = sourceRank
        self.hello = hello
        self.plan = plan
        self.stats = stats
    }

    /// The tensor called `name`, if present.
    public func tensor(named name: String) -> Tensor? {
        tensors.first { $0.name == name }?.tensor
    }

    /// Sum of the sequences' token counts: the row count of token-row tensors.
    public var totalTokenCount: Int { sequences.reduce(0) { $0 + $1.tokenCount } }
}

extension Message {
    /// Handshake payload: each rank tells the others what it runs.
    public struct Hello: Sendable, Equatable {
        public var worldSize: UInt32
        /// Identifies the checkpoint; peers must agree.
        public var modelFingerprint: String
        /// Hash of the model configuration as loaded; peers must agree.
        public var configHash: UInt64
        /// Free-form build description, for error messages only.
        public var softwareVersion: String
        /// The rank's kernel family per weight dtype (`KernelTable.summary`).
        public var kernels: String

        public init(worldSize: UInt32, modelFingerprint: String, configHash: UInt64, softwareVersion: String = "",
                    kernels: String = "") {
            self.worldSize = worldSize
            self.modelFingerprint = modelFingerprint
            self.configHash = configHash
            self.softwareVersion = softwareVersion
            self.kernels = kernels
        }
    }

    /// One pipeline stage as it travels in a PLAN: LM layers `layers` on `rank`.
    public struct Stage: Sendable, Equatable {
        public var rank: UInt32
        public var layers: Range<Int>
        /// Vision tower, resampler and embeddings.
        public var ownsInput: Bool
        /// Final norm and LM head.
        public var ownsOutput: Bool
        /// Tensor parallelism: the rank's place in its stage's group, and the group's size.
        public var tensorParallelRank: UInt32
        public var tensorParallelSize: UInt32

        public init(rank: UInt32, layers: Range<Int>, ownsInput: Bool, ownsOutput: Bool,
                    tensorParallelRank: UInt32 = 0, tensorParallelSize: UInt32 = 1) {
            self.rank = rank
            self.layers = layers
            self.ownsInput = ownsInput
            self.ownsOutput = ownsOutput
            self.tensorParallelRank = tensorParallelRank
            self.tensorParallelSize = tensorParallelSize
        }
    }

    /// The stage assignment rank 0 broadcasts.
    public struct Plan: Sendable, Equatable {
        public var stages: [Stage]
        public var configHash: UInt64

        public init(stages: [Stage], configHash: UInt64) {
            self.stages = stages
            self.configHash = configHash
        }
    }

    /// Names of the tensors the pipeline sends, so no stage spells them itself.
    public enum TensorName {
        /// Preprocessed images `[N, 3, H, W]` (coordinator -> vision stage).
        public static let pixels = "pixels"
        /// Resampled visual tokens of one image `[latents, C]`; suffixed with the image index.
        public static func visualTokens(image: Int) -> String { "visual_tokens.\(image)" }
        /// Hidden states `[T, C]`, the sequences' tokens back to back.
        public static let hidden = "hidden"
        /// Next-token logits `[S, V]`, one row per sequence.
        public static let logits = "logits"
    }
}

/// How f32 tensors travel. f16/bf16 tensors always travel as they are.
public enum FloatEncoding: Sendable {
    /// Exact.
    case f32
    /// Half the bytes; rounded to nearest even (8 significant bits).
    case bf16
}

/// What a rank reports about its run (`--stats`).
public struct RankStats: Sendable, Equatable {
    public var rank: UInt32
    public var role: String
    public var layerStart: UInt32
    public var layerEnd: UInt32
    public var weightBytes: UInt64
    public var peakRSSBytes: UInt64
    public var computeSeconds: Double
    public var waitSeconds: Double
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    /// Most bytes of KV and cross-attention caches held at once.
    public var cacheBytes: UInt64

    public init(rank: UInt32, role: String, layerStart: UInt32, layerEnd: UInt32, weightBytes: UInt64,
                peakRSSBytes: UInt64, computeSeconds: Double, waitSeconds: Double, bytesSent: UInt64,
                bytesReceived: UInt64, cacheBytes: UInt64) {
        self.rank = rank
        self.role = role
        self.layerStart = layerStart
        self.layerEnd = layerEnd
        self.weightBytes = weightBytes
        self.peakRSSBytes = peakRSSBytes
        self.computeSeconds = computeSeconds
        self.waitSeconds = waitSeconds
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
        self.cacheBytes = cacheBytes
    }
}
