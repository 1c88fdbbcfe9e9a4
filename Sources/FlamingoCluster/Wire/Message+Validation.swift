import FlamingoCore

// The rules every message obeys on the wire. The encoder checks them on the Swift message
// before packing and the decoder on the unpacked protobuf before allocating any tensor, so a
// frame one build writes is a frame the other accepts.

extension Message {
    /// Throws the first rule this message breaks.
    public func validate() throws(WireError) {
        // protobuf-c packs strings with strlen: a NUL would silently end them early.
        func noNUL(_ s: String, _ field: @autoclosure () -> String) throws(WireError) {
            guard !s.utf8.contains(0) else { throw .embeddedNUL(field: field()) }
        }
        try noNUL(errorMessage, "error_message")
        if let hello {
            try noNUL(hello.modelFingerprint, "hello.model_fingerprint")
            try noNUL(hello.softwareVersion, "hello.software_version")
        }
        for (i, t) in tensors.enumerated() { try noNUL(t.name, "tensors[\(i)].name") }

        var seen = Set<UInt64>()
        for (i, sequence) in sequences.enumerated() {
            try sequence.validate(at: i)
            guard seen.insert(sequence.sequenceID).inserted else { throw .duplicateSequence(sequence.sequenceID) }
        }
        var names = Set<String>()
        for t in tensors {
            try Self.checkTensorName(t.name, seen: &names)
            guard t.tensor.rank <= Frame.maxTensorRank else {
                throw .tooManyDimensions(name: t.name, rank: t.tensor.rank)
            }
        }
        if kind == .hello, hello == nil { throw .missingPayload(kind: kind, field: "hello") }
        if kind == .plan, plan == nil { throw .missingPayload(kind: kind, field: "plan") }
        // Checked whenever present: the encoder narrows these to uint32.
        for stage in plan?.stages ?? [] {
            guard stage.layers.lowerBound >= 0, stage.layers.upperBound <= Int(UInt32.max) else {
                throw .invalidStage(rank: stage.rank, layerStart: stage.layers.lowerBound, layerEnd: stage.layers.upperBound)
            }
        }
    }

    static func checkTensorName(_ name: String, seen: inout Set<String>) throws(WireError) {
        guard !name.isEmpty else { throw .emptyTensorName }
        guard seen.insert(name).inserted else { throw .duplicateTensorName(name) }
    }

    /// Checks a tensor header from the wire and returns its dtype and shape. Overflow-safe: the
    /// element and byte counts are multiplied with overflow checks, so a hostile shape cannot
    /// wrap around to match a small `byteCount`.
    static func checkTensorHeader<Dims: Collection<Int64>>(
        name: String, dtypeValue: Int, shape: Dims, byteCount: Int
    ) throws(WireError) -> (DType, [Int]) {
        guard let dtype = DType(wireValue: dtypeValue) else { throw .unknownDType(name: name, value: dtypeValue) }
        guard shape.count <= Frame.maxTensorRank else { throw .tooManyDimensions(name: name, rank: shape.count) }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw .negativeDimension(name: name, shape: Array(shape)) }
        var bytes = Int64(dtype.size)
        for d in shape {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: d)
            guard !overflow else { throw .dimensionOverflow(name: name, shape: Array(shape)) }
            bytes = product
        }
        let dims = shape.map { Int($0) }
        guard bytes == Int64(byteCount) else { throw .shapeMismatch(name: name, shape: dims, bytes: byteCount) }
        return (dtype, dims)
    }
}

extension SequenceMeta {
    /// `index` names the sequence in range errors (`sequences[index].field`).
    func validate(at index: Int) throws(WireError) {
        func inUInt32(_ value: Int, _ field: String) throws(WireError) {
            guard value >= 0, value <= Int(UInt32.max) else {
                throw .valueOutOfRange(field: "sequences[\(index)].\(field)", value: value)
            }
        }
        try inUInt32(startPosition, "start_position")
        try inUInt32(tokenCount, "token_count")
        try inUInt32(imageCount, "image_count")
        // Every token's position must be representable.
        try inUInt32(startPosition + tokenCount, "start_position + token_count")

        guard imageIndex.isEmpty || imageIndex.count == tokenCount else {
            throw .sequenceFieldCount(sequenceID: sequenceID, field: "image_index", count: imageIndex.count, tokenCount: tokenCount)
        }
        guard tokenIDs.isEmpty || tokenIDs.count == tokenCount else {
            throw .sequenceFieldCount(sequenceID: sequenceID, field: "token_ids", count: tokenIDs.count, tokenCount: tokenCount)
        }
        for (t, image) in imageIndex.enumerated() {
            if let image, !(0..<min(imageCount, Int(Int32.max))).contains(image) {
                throw .imageIndexOutOfRange(sequenceID: sequenceID, token: t, index: image, imageCount: imageCount)
            }
        }
        for (t, id) in tokenIDs.enumerated() {
            guard id >= 0 else { throw .negativeTokenID(sequenceID: sequenceID, token: t, id: id) }
            guard id <= Int(Int32.max) else { throw .valueOutOfRange(field: "sequences[\(index)].token_ids[\(t)]", value: id) }
        }
    }
}
