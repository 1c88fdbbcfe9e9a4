/// Which image each token cross-attends to, by IDEFICS's rule
/// (`image_attention_mask_for_packed_input_ids` in transformers/models/idefics/processing_idefics.py):
/// a token sees the most recent image at or before it; tokens before any image see none; after an
/// end-of-sequence token, tokens see none until the next image.
enum IdeficsImageAttention {
    /// - Returns: one entry per token: the index of the image it sees (in prompt order), or nil.
    static func imageIndices(tokens: [Int], imageTokenID: Int, endOfSequenceTokenID: Int?) -> [Int?] {
        var result: [Int?] = []
        result.reserveCapacity(tokens.count)
        var count = -1
        var seenEndOfSequence = false
        for token in tokens {
            var index: Int? = nil
            if token == imageTokenID {
                count += 1
                seenEndOfSequence = false
            }
            if count >= 0 && !seenEndOfSequence { index = count }
            result.append(index)
            if let eos = endOfSequenceTokenID, token == eos { seenEndOfSequence = true }
        }
        return result
    }
}
