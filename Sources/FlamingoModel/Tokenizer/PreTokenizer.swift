import FlamingoCore
/// A run of text on its way to the model, plus the one bit of offset information the
/// supported components need.
struct TextPiece: Sendable, Equatable {
    var scalars: Scalars
    /// True when this piece begins at offset 0 of the caller's original text. HF's Metaspace
    /// `prepend_scheme: "first"` prepends "▁" only to such a piece (it checks
    /// `offsets_original().0 == 0`), so text following an added token like `<s>` gets no "▁".
    var isAtStart: Bool
}

/// Splits normalised text into words that the model tokenizes independently
/// (tokenizer.json `pre_tokenizer`). Mirrors `tokenizers::pre_tokenizers`; empty pieces are
/// dropped after every split, as `PreTokenizedString::split` does.
protocol PreTokenizer: Sendable {
    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece]
}

/// The `type` values accepted for `pre_tokenizer` sections. Byte-level BPE (`ByteLevel`) and
/// regex `Split` are deliberately absent: LLaMA-family tokenizers do not use them, and a file
/// that does is rejected at load instead of being tokenized wrongly.
enum PreTokenizerType: String {
    case sequence = "Sequence"
    case metaspace = "Metaspace"
    case whitespaceSplit = "WhitespaceSplit"
}

enum PreTokenizerFactory {
    /// Builds the pre-tokenizer for a tokenizer.json `pre_tokenizer` value; `null` means none
    /// (the whole normalised piece is one word, as in legacy LLaMA files).
    static func make(_ json: JSON) throws -> (any PreTokenizer)? {
        if json.isNull { return nil }
        let config = try ComponentConfig(component: "pre-tokenizer", json: json)
        let typeName = try config.type()
        guard let type = PreTokenizerType(rawValue: typeName) else {
            throw TokenizerError.unsupportedComponent(component: "pre-tokenizer", type: typeName)
        }
        switch type {
        case .sequence:
            return SequencePreTokenizer(preTokenizers: try config.array("pretokenizers").compactMap { try make($0) })
        case .metaspace:
            return try MetaspacePreTokenizer(config: config)
        case .whitespaceSplit:
            return WhitespaceSplitPreTokenizer()
        }
    }
}

struct SequencePreTokenizer: PreTokenizer {
    let preTokenizers: [any PreTokenizer]

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        preTokenizers.reduce(pieces) { $1.preTokenize($0) }
    }
}

/// When Metaspace adds the replacement character in front of a piece.
enum PrependScheme: String, Sendable {
    case always
    case first
    case never

    /// Reads `prepend_scheme`, falling back to the legacy `add_prefix_space` flag
    /// (true → always, false → never) that older tokenizer.json files carry.
    init(config: ComponentConfig) throws {
        if let raw = try config.optionalString("prepend_scheme") {
            guard let scheme = PrependScheme(rawValue: raw) else {
                throw TokenizerError.unsupportedOption(component: config.component, option: "prepend_scheme", value: raw)
            }
            self = scheme
        } else if let add = try config.optionalBool("add_prefix_space") {
            self = add ? .always : .never
        } else {
            self = .always
        }
    }
}

/// `Metaspace`: SentencePiece-style whitespace handling. Spaces become `replacement` ("▁"),
/// a leading "▁" is added per `prependScheme`, and with `split` the text is cut before every
/// "▁" (each "▁" starts a new word, so "a  b" → "▁a", "▁", "▁b").
struct MetaspacePreTokenizer: PreTokenizer {
    let replacement: Unicode.Scalar
    let prependScheme: PrependScheme
    let split: Bool

    init(config: ComponentConfig) throws {
        replacement = try config.scalar("replacement")
        prependScheme = try PrependScheme(config: config)
        split = try config.bool("split", default: true)
    }

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        var out: [TextPiece] = []
        out.reserveCapacity(pieces.count)
        for piece in pieces {
            var text = piece.scalars.map { $0 == " " ? replacement : $0 }
            let startsWithReplacement = text.first == replacement
            switch prependScheme {
            case .always where !startsWithReplacement,
                 .first where !startsWithReplacement && piece.isAtStart:
                text.insert(replacement, at: 0)
            default:
                break
            }
            guard split else {
                if !text.isEmpty { out.append(TextPiece(scalars: text, isAtStart: piece.isAtStart)) }
                continue
            }
            var start = 0
            for i in text.indices where i > start && text[i] == replacement {
                out.append(TextPiece(scalars: Array(text[start..<i]), isAtStart: piece.isAtStart && start == 0))
                start = i
            }
            if start < text.count {
                out.append(TextPiece(scalars: Array(text[start...]), isAtStart: piece.isAtStart && start == 0))
            }
        }
        return out
    }
}

/// `WhitespaceSplit`: splits on White_Space and drops it.
struct WhitespaceSplitPreTokenizer: PreTokenizer {
    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        var out: [TextPiece] = []
        for piece in pieces {
            var start: Int?
            for (i, s) in piece.scalars.enumerated() {
                if s.isWhitespace {
                    if let st = start {
                        out.append(TextPiece(scalars: Array(piece.scalars[st..<i]), isAtStart: piece.isAtStart && st == 0))
                        start = nil
                    }
                } else if start == nil {
                    start = i
                }
            }
            if let st = start {
                out.append(TextPiece(scalars: Array(piece.scalars[st...]), isAtStart: piece.isAtStart && st == 0))
            }
        }
        return out
    }
}
