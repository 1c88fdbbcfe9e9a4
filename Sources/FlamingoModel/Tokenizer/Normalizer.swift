import FlamingoCore
import Foundation

/// Rewrites text before pre-tokenization (tokenizer.json `normalizer`).
///
/// Mirrors `tokenizers::normalizers`. Offsets/alignments are not tracked because the engine
/// only needs ids; this is why a piece's "starts at the original beginning" flag is carried
/// separately (see `TextPiece`).
protocol Normalizer: Sendable {
    func normalize(_ text: Scalars) -> Scalars
}

/// The `type` values accepted for `normalizer` sections.
enum NormalizerType: String {
    case sequence = "Sequence"
    case prepend = "Prepend"
    case replace = "Replace"
    case nfc = "NFC"
    case nfkc = "NFKC"
    case nfd = "NFD"
    case nfkd = "NFKD"
    case lowercase = "Lowercase"
    case strip = "Strip"
}

enum NormalizerFactory {
    /// Builds the normalizer for a tokenizer.json `normalizer` value; `null` means none.
    static func make(_ json: JSON) throws -> (any Normalizer)? {
        if json.isNull { return nil }
        let config = try ComponentConfig(component: "normalizer", json: json)
        let typeName = try config.type()
        guard let type = NormalizerType(rawValue: typeName) else {
            throw TokenizerError.unsupportedComponent(component: "normalizer", type: typeName)
        }
        switch type {
        case .sequence:
            let parts = try config.array("normalizers").compactMap { try make($0) }
            return SequenceNormalizer(normalizers: parts)
        case .prepend:
            return PrependNormalizer(prefix: Scalars(try config.string("prepend")))
        case .replace:
            return ReplaceNormalizer(pattern: try config.stringPattern(), content: Scalars(try config.string("content")))
        case .nfc: return UnicodeNormalizer(form: .nfc)
        case .nfkc: return UnicodeNormalizer(form: .nfkc)
        case .nfd: return UnicodeNormalizer(form: .nfd)
        case .nfkd: return UnicodeNormalizer(form: .nfkd)
        case .lowercase: return LowercaseNormalizer()
        case .strip:
            return StripNormalizer(
                left: try config.bool("strip_left", default: true),
                right: try config.bool("strip_right", default: true))
        }
    }
}

struct SequenceNormalizer: Normalizer {
    let normalizers: [any Normalizer]

    func normalize(_ text: Scalars) -> Scalars {
        normalizers.reduce(text) { $1.normalize($0) }
    }
}

/// `Prepend`: adds a prefix, but only to non-empty text (as HF does), so an empty piece
/// between two added tokens does not become a lone "▁".
struct PrependNormalizer: Normalizer {
    let prefix: Scalars

    func normalize(_ text: Scalars) -> Scalars {
        text.isEmpty ? text : prefix + text
    }
}

/// `Replace` with a literal string pattern (LLaMA: " " → "▁").
struct ReplaceNormalizer: Normalizer {
    let pattern: Scalars
    let content: Scalars

    func normalize(_ text: Scalars) -> Scalars {
        text.replacingAll(pattern, with: content)
    }
}

/// NFC/NFKC/NFD/NFKD via Foundation's normalisation (ICU/CoreFoundation tables).
struct UnicodeNormalizer: Normalizer {
    enum Form { case nfc, nfkc, nfd, nfkd }
    let form: Form

    func normalize(_ text: Scalars) -> Scalars {
        // Pure ASCII is invariant under every normalisation form.
        if text.allSatisfy({ $0.isASCII }) { return text }
        let s = text.string
        let normalized: String
        switch form {
        case .nfc: normalized = s.precomposedStringWithCanonicalMapping
        case .nfkc: normalized = s.precomposedStringWithCompatibilityMapping
        case .nfd: normalized = s.decomposedStringWithCanonicalMapping
        case .nfkd: normalized = s.decomposedStringWithCompatibilityMapping
        }
        return Scalars(normalized)
    }
}

/// `Lowercase`: per-scalar full lowercase mapping, like Rust's `char::to_lowercase` (which,
/// unlike `str::to_lowercase`, has no final-sigma rule).
struct LowercaseNormalizer: Normalizer {
    func normalize(_ text: Scalars) -> Scalars {
        var out: Scalars = []
        out.reserveCapacity(text.count)
        for s in text {
            if s.isASCII {
                out.append(s.properties.isUppercase ? Unicode.Scalar(s.value + 32) ?? s : s)
            } else {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return out
    }
}

/// `Strip`: removes leading and/or trailing White_Space.
struct StripNormalizer: Normalizer {
    let left: Bool
    let right: Bool

    func normalize(_ text: Scalars) -> Scalars {
        var lo = 0
        var hi = text.count
        if left { while lo < hi, text[lo].isWhitespace { lo += 1 } }
        if right { while hi > lo, text[hi - 1].isWhitespace { hi -= 1 } }
        return Array(text[lo..<hi])
    }
}
