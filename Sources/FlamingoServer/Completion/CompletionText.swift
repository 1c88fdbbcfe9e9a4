import FlamingoModel

/// Turns generated tokens into text as they arrive, and finds stop sequences in it.
///
/// Text is released only when it is final: byte tokens (`<0xE6>`, SentencePiece's byte fallback)
/// wait until their run ends, because the decoder renders a run as one UTF-8 string (or one
/// U+FFFD per byte when the run is not valid UTF-8 as a whole, so one more byte can change all of
/// it); a decode that ends in U+FFFD waits for more; and text that could be the beginning of a stop
/// sequence waits until it is known not to be one. Once a stop sequence appears, the text before it
/// is released and `stopped` is set; the stop sequence itself is never released (OpenAI's rule).
/// The released pieces concatenate to the text `flamingo generate` prints for the same tokens,
/// cut before the first stop sequence.
public struct CompletionText: Sendable {
    public let tokenizer: Tokenizer
    public let stopSequences: [[Unicode.Scalar]]

    public private(set) var tokens: [Int] = []
    /// True once a stop sequence was found: feed no more tokens.
    public private(set) var stopped = false
    /// Everything released so far.
    public private(set) var released = ""

    // Incremental detokenization (vLLM's `detokenize_incrementally`): decode from `prefixOffset`
    // and release what goes beyond the text of tokens[prefixOffset..<readOffset], so that decoders
    // that treat the first token specially (a stripped leading space) still give the right delta.
    private var prefixOffset = 0
    private var readOffset = 0
    /// Decoded text not yet released (it may start a stop sequence).
    private var pending: [Unicode.Scalar] = []

    public init(tokenizer: Tokenizer, stop: [String]) {
        self.tokenizer = tokenizer
        self.stopSequences = stop.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty }
    }

    /// Adds a generated token; returns the text this releases (possibly empty).
    public mutating func append(_ token: Int) -> String {
        precondition(!stopped, "CompletionText: token after a stop sequence")
        tokens.append(token)
        // The slices decoded below then always start after a run of byte tokens, never inside one.
        if isByteToken(token) { return "" }
        let prefixText = decode(tokens[prefixOffset..<readOffset])
        let newText = decode(tokens[prefixOffset...])
        let prefixScalars = Array(prefixText.unicodeScalars)
        let newScalars = Array(newText.unicodeScalars)
        guard newScalars.count > prefixScalars.count, newScalars.last != "\u{FFFD}",
              newScalars.starts(with: prefixScalars) else {
            return ""
        }
        pending += newScalars[prefixScalars.count...]
        prefixOffset = readOffset
        readOffset = tokens.count
        return release(final: false)
    }

    /// Generation ended: releases whatever is still held (text that only looked like the start of a
    /// stop sequence, or a trailing partial character).
    public mutating func finish() -> String {
        guard !stopped else { return "" }
        // The whole decode is the reference; anything the incremental pass has not released yet is its tail.
        let full = Array(decode(tokens[...]).unicodeScalars)
        let emitted = Array(released.unicodeScalars)
        if full.starts(with: emitted) {
            pending = Array(full[emitted.count...])
        }
        return release(final: true)
    }

    private func isByteToken(_ id: Int) -> Bool {
        guard let piece = tokenizer.token(for: id) else { return false }
        let u = Array(piece.utf8)
        return u.count == 6 && u[0] == UInt8(ascii: "<") && u[1] == UInt8(ascii: "0") && u[2] == UInt8(ascii: "x")
            && u[5] == UInt8(ascii: ">")
    }

    private func decode(_ ids: ArraySlice<Int>) -> String {
        tokenizer.decode(Array(ids), skipSpecialTokens: true)
    }

    /// Releases pending text up to the first stop sequence, or all but a possible stop-sequence
    /// start (everything, when `final`).
    private mutating func release(final: Bool) -> String {
        var cut = pending.count
        if let match = firstStop() {
            cut = match
            stopped = true
        } else if !final {
            cut = pending.count - heldSuffixLength()
        }
        let out = String(String.UnicodeScalarView(pending[..<cut]))
        pending.removeFirst(stopped ? pending.count : cut)
        released += out
        return out
    }

    /// Start of the earliest stop sequence in `pending`.
    private func firstStop() -> Int? {
        var best: Int? = nil
        for stop in stopSequences where stop.count <= pending.count {
            var i = 0
            while i + stop.count <= pending.count, best.map({ i < $0 }) ?? true {
                if pending[i..<(i + stop.count)].elementsEqual(stop) {
                    best = i
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop sequence.
    private func heldSuffixLength() -> Int {
        var held = 0
        for stop in stopSequences {
            for length in stride(from: min(stop.count - 1, pending.count), to: held, by: -1) {
                if pending[(pending.count - length)...].elementsEqual(stop[..<length]) {
                    held = length
                    break
                }
            }
        }
        return held
    }
}
