// The only file that touches protobuf-c (STYLE.md §1): it maps `Message` to the generated
// `Flamingo__Envelope` and back. No C pointer leaves this file, and none outlives the call
// that made it.
import CFlamingoProto
import FlamingoCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if _endian(big)
#error("tensor data travels little-endian; add byte swapping before building for big-endian")
#endif

enum Proto {
    // MARK: Encode

    /// Packs one prepared envelope. Valid only inside the `withPacker` body that made it:
    /// do not let it escape.
    struct EnvelopePacker {
        fileprivate let envelope: UnsafePointer<Flamingo__Envelope>

        fileprivate init(_ envelope: UnsafePointer<Flamingo__Envelope>) { self.envelope = envelope }

        var packedSize: Int { flamingo__envelope__get_packed_size(envelope) }

        /// Writes the envelope to the start of `out` (at least `packedSize` bytes); returns the byte count.
        func pack(into out: UnsafeMutableRawBufferPointer) -> Int {
            precondition(out.count >= packedSize)
            return flamingo__envelope__pack(envelope, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// Builds the C envelope for `message` (pointing into its tensors, no copies except a bf16
    /// narrowing) and calls `body` with a packer for it. Assumes `message.validate()` passed.
    static func withPacker<R, E: Error>(_ message: Message, floatEncoding: FloatEncoding,
                                        _ body: (EnvelopePacker) throws(E) -> R) throws(E) -> R {
        let wireTensors = message.tensors.map { wireTensor($0.tensor, floatEncoding: floatEncoding) }
        let memory = CMemory()
        defer { memory.release() }

        var envelope = Flamingo__Envelope()
        flamingo__envelope__init(&envelope)
        envelope.version = Frame.version
        envelope.kind = Flamingo__Kind(rawValue: UInt32(message.kind.rawValue))
        envelope.request_id = message.requestID
        envelope.microbatch_id = message.microbatchID
        envelope.step = message.step
        envelope.source_rank = message.sourceRank
        envelope.error_message = memory.string(message.errorMessage)

        let sequences = memory.pointerArray(Flamingo__SequenceMeta.self, count: message.sequences.count)
        for (i, s) in message.sequences.enumerated() {
            let c = memory.pointee(Flamingo__SequenceMeta.self)
            flamingo__sequence_meta__init(c)
            c.pointee.sequence_id = s.sequenceID
            c.pointee.start_position = UInt32(s.startPosition)
            c.pointee.token_count = UInt32(s.tokenCount)
            c.pointee.image_count = UInt32(s.imageCount)
            c.pointee.n_image_index = s.imageIndex.count
            c.pointee.image_index = memory.copy(s.imageIndex.map { Int32($0 ?? -1) })
            c.pointee.n_token_ids = s.tokenIDs.count
            c.pointee.token_ids = memory.copy(s.tokenIDs.map { Int32($0) })
            sequences[i] = c
        }
        envelope.n_sequences = message.sequences.count
        envelope.sequences = sequences

        if let hello = message.hello {
            let c = memory.pointee(Flamingo__Hello.self)
            flamingo__hello__init(c)
            c.pointee.world_size = hello.worldSize
            c.pointee.model_fingerprint = memory.string(hello.modelFingerprint)
            c.pointee.config_hash = hello.configHash
            c.pointee.software_version = memory.string(hello.softwareVersion)
            c.pointee.kernels = memory.string(hello.kernels)
            envelope.hello = c
        }
        if let stats = message.stats {
            let c = memory.pointee(Flamingo__RankStats.self)
            flamingo__rank_stats__init(c)
            c.pointee.rank = stats.rank
            c.pointee.role = memory.string(stats.role)
            c.pointee.layer_start = stats.layerStart
            c.pointee.layer_end = stats.layerEnd
            c.pointee.weight_bytes = stats.weightBytes
            c.pointee.peak_rss_bytes = stats.peakRSSBytes
            c.pointee.compute_seconds = stats.computeSeconds
            c.pointee.wait_seconds = stats.waitSeconds
            c.pointee.bytes_sent = stats.bytesSent
            c.pointee.bytes_received = stats.bytesReceived
            c.pointee.cache_bytes = stats.cacheBytes
            envelope.stats = c
        }
        if let plan = message.plan {
            let c = memory.pointee(Flamingo__Plan.self)
            flamingo__plan__init(c)
            c.pointee.config_hash = plan.configHash
            let stages = memory.pointerArray(Flamingo__Stage.self, count: plan.stages.count)
            for (i, stage) in plan.stages.enumerated() {
                let s = memory.pointee(Flamingo__Stage.self)
                flamingo__stage__init(s)
                s.pointee.rank = stage.rank
                s.pointee.layer_start = UInt32(stage.layers.lowerBound)
                s.pointee.layer_end = UInt32(stage.layers.upperBound)
                s.pointee.owns_input = stage.ownsInput ? 1 : 0
                s.pointee.owns_output = stage.ownsOutput ? 1 : 0
                s.pointee.tensor_parallel_rank = stage.tensorParallelRank
                s.pointee.tensor_parallel_size = stage.tensorParallelSize
                stages[i] = s
            }
            c.pointee.n_stages = plan.stages.count
            c.pointee.stages = stages
            envelope.plan = c
        }

        let tensors = memory.pointerArray(Flamingo__NamedTensor.self, count: wireTensors.count)
        for (i, (named, tensor)) in zip(message.tensors, wireTensors).enumerated() {
            let c = memory.pointee(Flamingo__NamedTensor.self)
            flamingo__named_tensor__init(c)
            c.pointee.name = memory.string(named.name)
            c.pointee.dtype = Flamingo__DType(rawValue: UInt32(tensor.dtype.wireValue))
            c.pointee.n_shape = tensor.shape.count
            c.pointee.shape = memory.copy(tensor.shape.map { Int64($0) })
            tensors[i] = c
        }
        envelope.n_tensors = wireTensors.count
        envelope.tensors = tensors

        // The data fields point straight into the tensors, so they are set inside the nested
        // withUnsafeRawBytes scopes and packing happens there too.
        return try withRawBytes(of: wireTensors) { (spans) throws(E) -> R in
            for (i, span) in spans.enumerated() {
                tensors[i]!.pointee.data = ProtobufCBinaryData(
                    len: span.count, data: UnsafeMutablePointer(mutating: span.baseAddress?.assumingMemoryBound(to: UInt8.self)))
            }
            return try withUnsafePointer(to: &envelope) { (pointer) throws(E) -> R in
                try body(EnvelopePacker(pointer))
            }
        }
    }

    /// The tensor as it travels: f32 narrowed to bf16 when asked, anything else unchanged.
    private static func wireTensor(_ tensor: Tensor, floatEncoding: FloatEncoding) -> Tensor {
        guard tensor.dtype == .f32, floatEncoding == .bf16 else { return tensor }
        var out = Tensor(zeros: tensor.shape, dtype: .bf16)
        tensor.withFloats { src in
            out.withUnsafeMutableRawBytes { raw in
                let dst = raw.bindMemory(to: UInt16.self)
                for i in 0..<src.count { dst[i] = floatToBF16(src[i]) }
            }
        }
        return out
    }

    /// Calls `body` with the raw bytes of every tensor at once (one nested scope per tensor).
    private static func withRawBytes<R, E: Error>(of tensors: [Tensor],
                                                  _ body: ([UnsafeRawBufferPointer]) throws(E) -> R) throws(E) -> R {
        var spans: [UnsafeRawBufferPointer] = []
        spans.reserveCapacity(tensors.count)
        func nest(_ i: Int) -> Result<R, E> {
            if i == tensors.count {
                do throws(E) { return .success(try body(spans)) } catch { return .failure(error) }
            }
            return tensors[i].withUnsafeRawBytes { raw in
                spans.append(raw)
                return nest(i + 1)
            }
        }
        return try nest(0).get()
    }

    // MARK: Decode

    /// Parser memory allowed on top of the payload size. protobuf-c copies strings and bytes
    /// (about 1× the payload) but also allocates a struct per submessage and a slot per field
    /// while scanning, so a payload of empty submessages costs tens of times its size. A budget
    /// turns that into an error instead of an out-of-memory kill.
    static let parseMemoryAllowance = 64 << 20

    /// Parses and checks one envelope; every count, enum and size is checked before a tensor
    /// is allocated. protobuf-c's memory is freed before returning, on every path.
    static func unpack(_ payload: UnsafeRawBufferPointer) throws(WireError) -> Message {
        let limit = payload.count + parseMemoryAllowance
        let budget = UnsafeMutablePointer<ParseBudget>.allocate(capacity: 1)
        budget.initialize(to: ParseBudget(remaining: limit, exceeded: false))
        let allocator = UnsafeMutablePointer<ProtobufCAllocator>.allocate(capacity: 1)
        allocator.initialize(to: ProtobufCAllocator(
            alloc: { data, size in
                let budget = data!.assumingMemoryBound(to: ParseBudget.self)
                guard size <= budget.pointee.remaining else {
                    budget.pointee.exceeded = true
                    return nil
                }
                budget.pointee.remaining -= size
                return malloc(max(size, 1))
            },
            free: { _, pointer in free(pointer) },
            allocator_data: UnsafeMutableRawPointer(budget)))
        defer {
            allocator.deallocate()
            budget.deallocate()
        }

        // protobuf-c wants a non-null pointer even for an empty payload.
        let envelope: UnsafeMutablePointer<Flamingo__Envelope>? = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { empty in
            flamingo__envelope__unpack(allocator, payload.count,
                                       payload.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(empty.baseAddress!))
        }
        guard let envelope else {
            throw budget.pointee.exceeded ? .parseMemoryExceeded(limit: limit) : .malformedProtobuf
        }
        defer { flamingo__envelope__free_unpacked(envelope, allocator) }
        return try read(envelope.pointee)
    }

    private static func read(_ e: Flamingo__Envelope) throws(WireError) -> Message {
        guard e.version == Frame.version else { throw .unsupportedVersion(Int(e.version)) }
        // Enums arrive as whatever int32 the sender wrote; report negative ones as such.
        let kindValue = Int(Int32(bitPattern: e.kind.rawValue))
        guard let kindByte = UInt8(exactly: kindValue), let kind = MessageKind(rawValue: kindByte) else {
            throw .unknownKind(kindValue)
        }

        var sequences: [SequenceMeta] = []
        sequences.reserveCapacity(e.n_sequences)
        for i in 0..<e.n_sequences {
            sequences.append(try readSequence(e.sequences[i]!.pointee))
        }

        // Tensor headers first: nothing sized by the input is allocated until all are valid.
        var headers: [(name: String, dtype: DType, shape: [Int], data: ProtobufCBinaryData)] = []
        headers.reserveCapacity(e.n_tensors)
        var names = Set<String>()
        for i in 0..<e.n_tensors {
            let t = e.tensors[i]!.pointee
            let name = try string(t.name, field: "tensors[\(i)].name")
            try Message.checkTensorName(name, seen: &names)
            let (dtype, shape) = try Message.checkTensorHeader(
                name: name, dtypeValue: Int(Int32(bitPattern: t.dtype.rawValue)),
                shape: UnsafeBufferPointer(start: t.shape, count: t.n_shape), byteCount: t.data.len)
            headers.append((name, dtype, shape, t.data))
        }

        var message = Message(
            kind: kind, requestID: e.request_id, microbatchID: e.microbatch_id, step: e.step,
            sequences: sequences, errorMessage: try string(e.error_message, field: "error_message"),
            sourceRank: e.source_rank)
        if let st = e.stats?.pointee {
            message.stats = RankStats(
                rank: st.rank, role: try string(st.role, field: "stats.role"), layerStart: st.layer_start,
                layerEnd: st.layer_end, weightBytes: st.weight_bytes, peakRSSBytes: st.peak_rss_bytes,
                computeSeconds: st.compute_seconds, waitSeconds: st.wait_seconds, bytesSent: st.bytes_sent,
                bytesReceived: st.bytes_received, cacheBytes: st.cache_bytes)
        }
        if let h = e.hello?.pointee {
            message.hello = Message.Hello(
                worldSize: h.world_size,
                modelFingerprint: try string(h.model_fingerprint, field: "hello.model_fingerprint"),
                configHash: h.config_hash,
                softwareVersion: try string(h.software_version, field: "hello.software_version"),
                kernels: try string(h.kernels, field: "hello.kernels"))
        }
        if let p = e.plan?.pointee {
            var stages: [Message.Stage] = []
            for i in 0..<p.n_stages {
                let s = p.stages[i]!.pointee
                guard s.layer_start <= s.layer_end else {
                    throw .invalidStage(rank: s.rank, layerStart: Int(s.layer_start), layerEnd: Int(s.layer_end))
                }
                stages.append(Message.Stage(rank: s.rank, layers: Int(s.layer_start)..<Int(s.layer_end),
                                            ownsInput: s.owns_input != 0, ownsOutput: s.owns_output != 0,
                                            tensorParallelRank: s.tensor_parallel_rank, tensorParallelSize: max(1, s.tensor_parallel_size)))
            }
            message.plan = Message.Plan(stages: stages, configHash: p.config_hash)
        }
        try message.validate()

        message.tensors = headers.map { h in
            var tensor = Tensor(zeros: h.shape, dtype: h.dtype)
            if h.data.len > 0 {
                tensor.withUnsafeMutableRawBytes { dst in
                    dst.baseAddress!.copyMemory(from: h.data.data, byteCount: h.data.len)
                }
            }
            return NamedTensor(h.name, tensor)
        }
        return message
    }

    private static func readSequence(_ s: Flamingo__SequenceMeta) throws(WireError) -> SequenceMeta {
        let tokenCount = Int(s.token_count)
        let imageCount = Int(s.image_count)
        // Count checks before copying the arrays, so the errors name the real mismatch.
        guard s.n_image_index == 0 || s.n_image_index == tokenCount else {
            throw .sequenceFieldCount(sequenceID: s.sequence_id, field: "image_index", count: s.n_image_index, tokenCount: tokenCount)
        }
        guard s.n_token_ids == 0 || s.n_token_ids == tokenCount else {
            throw .sequenceFieldCount(sequenceID: s.sequence_id, field: "token_ids", count: s.n_token_ids, tokenCount: tokenCount)
        }
        var imageIndex: [Int?] = []
        imageIndex.reserveCapacity(s.n_image_index)
        for t in 0..<s.n_image_index {
            let v = Int(s.image_index[t])
            guard v >= -1, v < imageCount else {
                throw .imageIndexOutOfRange(sequenceID: s.sequence_id, token: t, index: v, imageCount: imageCount)
            }
            imageIndex.append(v < 0 ? nil : v)
        }
        let tokenIDs = (0..<s.n_token_ids).map { Int(s.token_ids[$0]) }
        return SequenceMeta(sequenceID: s.sequence_id, startPosition: Int(s.start_position), tokenCount: tokenCount,
                            imageIndex: imageIndex, imageCount: imageCount, tokenIDs: tokenIDs)
    }

    /// A protobuf-c string field; protobuf-c does not check UTF-8, so this does.
    private static func string(_ c: UnsafeMutablePointer<CChar>?, field: String) throws(WireError) -> String {
        guard let c else { return "" }
        guard let s = String(validatingCString: c) else { throw .invalidUTF8(field: field) }
        return s
    }
}

/// Parser memory left for one `unpack` (the protobuf-c allocator's state).
private struct ParseBudget {
    var remaining: Int
    var exceeded: Bool
}

/// C memory for one envelope under construction, freed all at once by `release()`.
private final class CMemory {
    private var blocks: [UnsafeMutableRawPointer] = []
    private var strings: [UnsafeMutablePointer<CChar>] = []

    func pointee<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// An array of `count` null pointers to `T` (never a null array, even when empty).
    func pointerArray<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?> {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<T>?>.allocate(capacity: max(count, 1))
        p.initialize(repeating: nil, count: max(count, 1))
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func copy<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let p = UnsafeMutablePointer<T>.allocate(capacity: values.count)
        _ = UnsafeMutableBufferPointer(start: p, count: values.count).initialize(from: values)
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let c = strdup(s)!
        strings.append(c)
        return c
    }

    func release() {
        for b in blocks { b.deallocate() }
        for s in strings { free(s) }
        blocks.removeAll()
        strings.removeAll()
    }
}
