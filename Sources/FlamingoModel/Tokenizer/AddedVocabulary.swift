import FlamingoCore
/// One entry of tokenizer.json `added_tokens` (e.g. `<s>`, `<image>`, `<|endofchunk|>`).
struct AddedToken: Sendable {
    let id: Int
    let content: String
    /// Only match when not inside a word (neighbours are not `\w`).
    let singleWord: Bool
    /// Swallow whitespace on the left / right into the token.
    let lstrip: Bool
    let rstrip: Bool
    /// Match against the normalised text (true) or the raw input (false).
    let normalized: Bool
    /// Special tokens are dropped by `decode(skipSpecialTokens: true)`.
    let special: Bool

    init(json: JSON, index: Int) throws {
        let config = try ComponentConfig(component: "added_tokens[\(index)]", json: json)
        guard let id = config.json["id"]?.intValue, id >= 0, id < Int(Int32.max) else {
            throw config.invalid("id", "a non-negative 32-bit integer")
        }
        self.id = id
        content = try config.string("content")
        singleWord = try config.bool("single_word", default: false)
        lstrip = try config.bool("lstrip", default: false)
        rstrip = try config.bool("rstrip", default: false)
        special = try config.bool("special", default: false)
        // HF's default: special tokens are not normalised, ordinary added tokens are.
        normalized = try config.bool("normalized", default: !special)
    }
}

/// A segment of input after added tokens have been split out.
enum Segment: Sendable, Equatable {
    case token(Int)
    case text(TextPiece)
}

/// Leftmost-longest, non-overlapping multi-pattern search (the Aho-Corasick
/// `MatchKind::LeftmostLongest` that HF uses), indexed by first scalar. Prompts hold a handful
/// of added tokens, so checking the few candidates that start with the current scalar is
/// cheaper than building an automaton.
struct AddedTokenMatcher: Sendable {
    struct Match: Equatable {
        var start: Int
        var end: Int
        /// Index into `AddedVocabulary.tokens`.
        var token: Int
    }

    private let patterns: [Scalars]
    private let tokenIndices: [Int]
    /// First scalar → pattern indices, longest first (file order among equal lengths).
    private let candidates: [Unicode.Scalar: [Int]]

    /// `entries` are (pattern, token index); empty patterns never match (HF skips them).
    init(_ entries: [(pattern: Scalars, token: Int)]) {
        let kept = entries.filter { !$0.pattern.isEmpty }
        let patterns = kept.map(\.pattern)
        self.patterns = patterns
        tokenIndices = kept.map(\.token)
        var candidates: [Unicode.Scalar: [Int]] = [:]
        for (i, p) in patterns.enumerated() {
            candidates[p[0], default: []].append(i)
        }
        for key in Array(candidates.keys) {
            candidates[key]?.sort { lhs, rhs in
                let (a, b) = (patterns[lhs].count, patterns[rhs].count)
                return a != b ? a > b : lhs < rhs
            }
        }
        self.candidates = candidates
    }

    var isEmpty: Bool { patterns.isEmpty }

    func matches(in text: Scalars) -> [Match] {
        guard !patterns.isEmpty else { return [] }
        var found: [Match] = []
        var i = 0
        while i < text.count {
            if let list = candidates[text[i]],
               let hit = list.first(where: { p in
                   let pattern = patterns[p]
                   return i + pattern.count <= text.count && text[i..<(i + pattern.count)].elementsEqual(pattern)
               }) {
                let end = i + patterns[hit].count
                found.append(Match(start: i, end: end, token: tokenIndices[hit]))
                i = end
            } else {
                i += 1
            }
        }
        return found
    }
}

/// The added tokens and the two matchers HF builds from them: one over the raw input for
/// `normalized: false` tokens, one over normalised text for `normalized: true` tokens
/// (whose patterns are themselves normalised, so e.g. a Prepend normalizer affects them).
struct AddedVocabulary: Sendable {
    let tokens: [AddedToken]
    /// Content UTF-8 bytes → id.
    let idsByContent: [[UInt8]: Int]
    /// id → the string `decode` uses: the content, or for `normalized: true` tokens the
    /// normalised content (tokenizers ≥ 0.22 decode those through `normalized_cache`, so with
    /// LLaMA's Prepend normalizer such a token decodes as "▁<tok>" → " <tok>").
    let decodeStringByID: [Int: String]
    /// Contents of special tokens; decode skips any token with such content, as HF does.
    let specialContents: Set<[UInt8]>
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher

    init(json: JSON?, normalizer: (any Normalizer)?) throws {
        var tokens: [AddedToken] = []
        if let json, !json.isNull {
            guard let list = json.arrayValue else {
                throw TokenizerError.invalidField(component: "tokenizer", field: "added_tokens", expected: "an array")
            }
            tokens = try list.enumerated().map { try AddedToken(json: $1, index: $0) }
        }
        // HF matches special tokens first, then the others (each group in file order).
        tokens = tokens.filter(\.special) + tokens.filter { !$0.special }
        self.tokens = tokens
        var idsByContent: [[UInt8]: Int] = [:]
        var decodeStringByID: [Int: String] = [:]
        var specialContents: Set<[UInt8]> = []
        var raw: [(pattern: Scalars, token: Int)] = []
        var normalized: [(pattern: Scalars, token: Int)] = []
        for (index, token) in tokens.enumerated() {
            let bytes = Array(token.content.utf8)
            idsByContent[bytes] = token.id
            if token.special { specialContents.insert(bytes) }
            let scalars = Scalars(token.content)
            if token.normalized {
                let pattern = normalizer?.normalize(scalars) ?? scalars
                normalized.append((pattern, index))
                decodeStringByID[token.id] = pattern.string
            } else {
                raw.append((scalars, index))
                decodeStringByID[token.id] = token.content
            }
        }
        self.idsByContent = idsByContent
        self.decodeStringByID = decodeStringByID
        self.specialContents = specialContents
        rawMatcher = AddedTokenMatcher(raw)
        normalizedMatcher = AddedTokenMatcher(normalized)
    }

    /// Splits `text` around matches of `matcher`, applying each token's `single_word`,
    /// `lstrip` and `rstrip` rules exactly like HF `AddedVocabulary::find_matches`:
    /// a match rejected by `single_word` is still consumed by the search, and stripped
    /// whitespace already claimed by the previous token is not claimed twice.
    func split(_ text: Scalars, isAtStart: Bool, using matcher: AddedTokenMatcher) -> [Segment] {
        if matcher.isEmpty {
            return text.isEmpty ? [] : [.text(TextPiece(scalars: text, isAtStart: isAtStart))]
        }
        var segments: [Segment] = []
        var offset = 0
        func emitText(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            segments.append(.text(TextPiece(scalars: Array(text[range]), isAtStart: isAtStart && range.lowerBound == 0)))
        }
        for match in matcher.matches(in: text) {
            let token = tokens[match.token]
            var start = match.start
            var stop = match.end
            if token.singleWord {
                let startOK = start == 0 || !text[start - 1].isWordCharacter
                let stopOK = stop == text.count || !text[stop].isWordCharacter
                if !(startOK && stopOK) { continue }
            }
            if token.lstrip {
                var s = start
                while s > 0, text[s - 1].isWhitespace { s -= 1 }
                start = max(s, offset)
            }
            if token.rstrip {
                while stop < text.count, text[stop].isWhitespace { stop += 1 }
            }
            if offset < start { emitText(offset..<start) }
            segments.append(.token(token.id))
            offset = stop
        }
        if offset < text.count { emitText(offset..<text.count) }
        return segments
    }
}
