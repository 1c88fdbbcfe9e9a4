import FlamingoCore
/// Turns token strings back into text (tokenizer.json `decoder`). Like HF's `decode_chain`,
/// each decoder maps a list of strings to a list of strings, so they compose in a `Sequence`;
/// the final list is concatenated.
protocol TokenDecoder: Sendable {
    func decodeChain(_ tokens: [String]) -> [String]
}

/// The `type` values accepted for `decoder` sections.
enum DecoderType: String {
    case sequence = "Sequence"
    case replace = "Replace"
    case byteFallback = "ByteFallback"
    case fuse = "Fuse"
    case strip = "Strip"
    case metaspace = "Metaspace"
}

enum DecoderFactory {
    /// Builds the decoder for a tokenizer.json `decoder` value; `null` means none
    /// (tokens are then joined with spaces, as HF does).
    static func make(_ json: JSON) throws -> (any TokenDecoder)? {
        if json.isNull { return nil }
        let config = try ComponentConfig(component: "decoder", json: json)
        let typeName = try config.type()
        guard let type = DecoderType(rawValue: typeName) else {
            throw TokenizerError.unsupportedComponent(component: "decoder", type: typeName)
        }
        switch type {
        case .sequence:
            return SequenceDecoder(decoders: try config.array("decoders").compactMap { try make($0) })
        case .replace:
            return ReplaceDecoder(pattern: try config.stringPattern(), content: Scalars(try config.string("content")))
        case .byteFallback:
            return ByteFallbackDecoder()
        case .fuse:
            return FuseDecoder()
        case .strip:
            let start = try config.int("start", default: 0)
            let stop = try config.int("stop", default: 0)
            guard start >= 0, stop >= 0 else { throw config.invalid("start/stop", "non-negative integers") }
            return StripDecoder(content: try config.scalar("content"), start: start, stop: stop)
        case .metaspace:
            return MetaspaceDecoder(replacement: try config.scalar("replacement"), prependScheme: try PrependScheme(config: config))
        }
    }
}

struct SequenceDecoder: TokenDecoder {
    let decoders: [any TokenDecoder]

    func decodeChain(_ tokens: [String]) -> [String] {
        decoders.reduce(tokens) { $1.decodeChain($0) }
    }
}

/// `Replace`: literal replacement inside each token (LLaMA: "▁" → " ").
struct ReplaceDecoder: TokenDecoder {
    let pattern: Scalars
    let content: Scalars

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.map { Scalars($0).replacingAll(pattern, with: content).string }
    }
}

/// `ByteFallback`: runs of `<0xXX>` tokens are joined into bytes and decoded as UTF-8.
///
/// Matches HF exactly: if a whole run is valid UTF-8 it becomes that text; otherwise the run
/// yields one U+FFFD per byte (not per invalid sequence, unlike `String(decoding:)`), so
/// `<0xE4><0xBD>` decodes to "��".
struct ByteFallbackDecoder: TokenDecoder {
    /// The byte of a `<0xXX>` token: exactly six bytes, hex parsed like Rust
    /// `u8::from_str_radix` (either case; a leading '+' is accepted too).
    static func byte(of token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
              u[5] == UInt8(ascii: ">")
        else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        if u[3] == UInt8(ascii: "+") { return hex(u[4]) }
        guard let hi = hex(u[3]), let lo = hex(u[4]) else { return nil }
        return hi << 4 | lo
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        var out: [String] = []
        out.reserveCapacity(tokens.count)
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if UTF8Validation.isValid(pending) {
                out.append(String(decoding: pending, as: UTF8.self))
            } else {
                out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
            }
            pending.removeAll(keepingCapacity: true)
        }
        for token in tokens {
            if let byte = Self.byte(of: token) {
                pending.append(byte)
            } else {
                flush()
                out.append(token)
            }
        }
        flush()
        return out
    }
}

/// `Fuse`: concatenates everything into one token, so later steps (Strip) see the whole text.
struct FuseDecoder: TokenDecoder {
    func decodeChain(_ tokens: [String]) -> [String] {
        [tokens.joined()]
    }
}

/// `Strip`: removes up to `start` leading and `stop` trailing `content` characters from each
/// token. (HF panics when `stop` exceeds a token's length; here the cut simply stops.)
struct StripDecoder: TokenDecoder {
    let content: Unicode.Scalar
    let start: Int
    let stop: Int

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.map { token in
            let chars = Scalars(token)
            var lo = 0
            while lo < min(start, chars.count), chars[lo] == content { lo += 1 }
            var hi = chars.count
            var removed = 0
            while removed < stop, hi > 0, chars[hi - 1] == content {
                hi -= 1
                removed += 1
            }
            return lo < hi ? Array(chars[lo..<hi]).string : ""
        }
    }
}

/// `Metaspace`: "▁" → " ". In the first token every "▁" is dropped instead (unless the
/// scheme is `never`), which is how HF removes the prefix space the encoder added.
struct MetaspaceDecoder: TokenDecoder {
    let replacement: Unicode.Scalar
    let prependScheme: PrependScheme

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.enumerated().map { index, token in
            var out = Scalars()
            out.reserveCapacity(token.unicodeScalars.count)
            for c in token.unicodeScalars {
                if c == replacement {
                    if index == 0 && prependScheme != .never { continue }
                    out.append(" ")
                } else {
                    out.append(c)
                }
            }
            return out.string
        }
    }
}
