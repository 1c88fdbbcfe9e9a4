import FlamingoCore
/// Typed, throwing access to one component section of tokenizer.json (a normalizer,
/// pre-tokenizer, model, post-processor or decoder object).
///
/// Every accessor names the component and field in its error, so a malformed file yields
/// "Tokenizer decoder: field 'start' is missing or is not an integer" rather than a crash.
struct ComponentConfig {
    /// Which pipeline stage this section configures, for error messages ("normalizer", …).
    let component: String
    let json: JSON

    init(component: String, json: JSON) throws {
        guard case .object = json else {
            throw TokenizerError.invalidField(component: component, field: "(section)", expected: "an object")
        }
        self.component = component
        self.json = json
    }

    /// The `type` discriminator every HF component carries.
    func type() throws -> String {
        try string("type")
    }

    func invalid(_ field: String, _ expected: String) -> TokenizerError {
        .invalidField(component: component, field: field, expected: expected)
    }

    func string(_ key: String) throws -> String {
        guard let s = json[key]?.stringValue else { throw invalid(key, "a string") }
        return s
    }

    /// A string that may be absent or `null`.
    func optionalString(_ key: String) throws -> String? {
        guard let value = json[key], !value.isNull else { return nil }
        guard let s = value.stringValue else { throw invalid(key, "a string or null") }
        return s
    }

    func bool(_ key: String, default defaultValue: Bool) throws -> Bool {
        guard let value = json[key], !value.isNull else { return defaultValue }
        guard let b = value.boolValue else { throw invalid(key, "a boolean") }
        return b
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard let value = json[key], !value.isNull else { return nil }
        guard let b = value.boolValue else { throw invalid(key, "a boolean") }
        return b
    }

    func int(_ key: String, default defaultValue: Int) throws -> Int {
        guard let value = json[key], !value.isNull else { return defaultValue }
        guard let i = value.intValue else { throw invalid(key, "an integer") }
        return i
    }

    func array(_ key: String) throws -> [JSON] {
        guard let a = json[key]?.arrayValue else { throw invalid(key, "an array") }
        return a
    }

    /// A single Unicode scalar given as a one-character string (Metaspace `replacement`).
    func scalar(_ key: String) throws -> Unicode.Scalar {
        let s = try string(key)
        var it = s.unicodeScalars.makeIterator()
        guard let first = it.next(), it.next() == nil else { throw invalid(key, "a single character") }
        return first
    }

    /// The HF `pattern` field: `{"String": "…"}` is supported; `{"Regex": "…"}` is reported as
    /// unsupported because matching Rust/Oniguruma regex semantics exactly is out of scope.
    func stringPattern(_ key: String = "pattern") throws -> [Unicode.Scalar] {
        guard let pattern = json[key], case .object = pattern else { throw invalid(key, "an object") }
        if let s = pattern["String"]?.stringValue {
            guard !s.isEmpty else {
                throw TokenizerError.unsupportedOption(component: component, option: key, value: "empty string")
            }
            return Array(s.unicodeScalars)
        }
        if let r = pattern["Regex"]?.stringValue {
            throw TokenizerError.unsupportedOption(component: component, option: key, value: "Regex \"\(r)\"")
        }
        throw invalid(key, "{\"String\": …}")
    }
}

// MARK: - Scalar-level text helpers

/// The pipeline works on arrays of Unicode scalars, which correspond one-to-one to Rust
/// `char`s. Swift `Character`/`String` operations would instead group grapheme clusters
/// (a space followed by a combining mark is one `Character`) and compare canonically,
/// both of which diverge from the reference implementation.
typealias Scalars = [Unicode.Scalar]

extension Array where Element == Unicode.Scalar {
    init(_ string: String) {
        self = Array(string.unicodeScalars)
    }

    var string: String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: self)
        return String(view)
    }

    /// Replaces every non-overlapping occurrence of `pattern`, scanning left to right
    /// (Rust `str::replace` semantics).
    func replacingAll(_ pattern: Scalars, with content: Scalars) -> Scalars {
        guard !pattern.isEmpty, count >= pattern.count else { return self }
        var out: Scalars = []
        out.reserveCapacity(count + (content.count > pattern.count ? count / 2 : 0))
        var i = 0
        let first = pattern[0]
        while i < count {
            if self[i] == first, i + pattern.count <= count, self[i..<(i + pattern.count)].elementsEqual(pattern) {
                out.append(contentsOf: content)
                i += pattern.count
            } else {
                out.append(self[i])
                i += 1
            }
        }
        return out
    }

    /// The UTF-8 encoding, used as the exact key into the vocabulary.
    var utf8Bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        for s in self { UTF8.encode(s) { out.append($0) } }
        return out
    }
}

extension Unicode.Scalar {
    /// Rust `char::is_whitespace` / regex `\s`: the Unicode White_Space property.
    var isWhitespace: Bool { properties.isWhitespace }

    /// Rust regex `\w` (Unicode): Alphabetic, marks, decimal digits, connector punctuation
    /// and Join_Control. Used by the `single_word` rule of added tokens.
    var isWordCharacter: Bool {
        let p = properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }
}
