import FlamingoCore

/// Keys and values of one self-attention layer for one sequence: rows are positions, each row
/// holds all heads ([positions, C]), RoPE already applied to the keys.
public struct LayerKVCache: Sendable {
    public let width: Int
    public private(set) var length = 0
    private(set) var keys: [Float] = []
    private(set) var values: [Float] = []

    public init(width: Int) { self.width = width }

    /// Appends rows of k and v ([T, C] each).
    mutating func append(keys k: Tensor, values v: Tensor) {
        precondition(k.dim(-1) == width && v.dim(-1) == width, "cache rows of \(width), got \(k.shape)")
        k.withFloats { keys.append(contentsOf: $0) }
        v.withFloats { values.append(contentsOf: $0) }
        length += k.count / width
    }

    /// Bytes held.
    public var byteCount: Int { (keys.capacity + values.capacity) * MemoryLayout<Float>.size }

    func withKeysAndValues<R>(_ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> R) -> R {
        keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in body(k.baseAddress!, v.baseAddress!) } }
    }
}

/// One image's cross-attention keys and values for one gated block ([visual tokens, C] each),
/// computed once per request from the visual tokens (k already normalised when the block has qk norms).
public struct CrossAttentionKV: Sendable {
    public let keys: Tensor
    public let values: Tensor
}

/// Everything one sequence keeps between steps on the layers a process owns: self-attention
/// KV caches for those layers and the cross-attention K/V of its images for their gated blocks.
public struct SequenceCache: Sendable {
    /// The LM layers these caches belong to.
    public let layers: Range<Int>
    /// Self-attention caches, indexed by layer - layers.lowerBound.
    public var selfAttention: [LayerKVCache]
    /// Cross-attention K/V by gated block index, then by image (in prompt order).
    public var crossAttention: [Int: [CrossAttentionKV]] = [:]
    /// Positions processed so far (the next token's position). Tracked here as well as per layer
    /// so a stage that owns no layers still knows where a sequence is.
    public var length = 0
    /// Images attached so far.
    public var imageCount = 0

    public init(layers: Range<Int>, width: Int) {
        self.layers = layers
        selfAttention = Array(repeating: LayerKVCache(width: width), count: layers.count)
    }

    /// Bytes held by all caches of this sequence.
    public var byteCount: Int {
        selfAttention.reduce(0) { $0 + $1.byteCount }
            + crossAttention.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.keys.byteCount + $1.values.byteCount } }
    }
}

/// The rows of a microbatch that belong to one sequence, and the image each of those tokens sees.
public struct SequenceSlice: Sendable, Equatable {
    public var rows: Range<Int>
    /// One entry per row: index of the attached image the token cross-attends to, or nil.
    public var imageIndex: [Int?]

    public init(rows: Range<Int>, imageIndex: [Int?]) {
        precondition(rows.count == imageIndex.count, "one image index per row")
        self.rows = rows
        self.imageIndex = imageIndex
    }
}
