import FlamingoCore
import Foundation

// A value inside a template render: Python's data model as Jinja2 sees it, reduced to what chat
// templates use. Strings are compared, indexed and counted by Unicode scalars, as Python does (Swift's
// `String` equality is canonical equivalence and its `count` counts grapheme clusters).

/// A namespace object (`namespace(...)`): the one mutable value, shared by reference so that
/// `{% set ns.x = ... %}` inside a loop is seen after it.
final class JinjaNamespace {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

/// An insertion-ordered dict with string keys (every dict a chat template sees comes from JSON or
/// from a literal with string keys). Keys compare by Unicode scalars.
struct JinjaDict {
    private(set) var entries: [(key: String, value: JinjaValue)] = []

    init(_ entries: [(key: String, value: JinjaValue)] = []) {
        for (k, v) in entries { self[k] = v }
    }

    var count: Int { entries.count }
    var keys: [String] { entries.map(\.key) }

    private func index(of key: String) -> Int? {
        entries.firstIndex { $0.key.unicodeScalars.elementsEqual(key.unicodeScalars) }
    }

    subscript(key: String) -> JinjaValue? {
        get { index(of: key).map { entries[$0].value } }
        set {
            if let i = index(of: key) {
                if let newValue { entries[i].value = newValue } else { entries.remove(at: i) }
            } else if let newValue {
                entries.append((key, newValue))
            }
        }
    }
}

/// Describes what was undefined, for the error raised when an undefined value is used.
struct UndefinedHint {
    var message: String
    static func name(_ name: String) -> UndefinedHint { UndefinedHint(message: "'\(name)' is undefined") }
}

enum JinjaValue {
    /// Jinja's default `Undefined`: renders empty, is falsy, iterates as empty, `is defined` is false;
    /// most other uses are an error carrying the hint.
    case undefined(UndefinedHint)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    /// A tuple (`(a, b)`, `dict.items()` pairs): behaves as a list, prints with parentheses.
    case tuple([JinjaValue])
    case dict(JinjaDict)
    case namespace(JinjaNamespace)
    /// A global function (`raise_exception`, `namespace`, `range`, `dict`, `strftime_now`).
    case function(String)
    /// A method looked up on a value (`message.content.strip`), called next.
    indirect case method(JinjaValue, String)
    /// The `loop` variable of a for loop.
    case loop(LoopState)

    static func undefined(_ message: String) -> JinjaValue { .undefined(UndefinedHint(message: message)) }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python's truth value.
    var truthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .list(let a), .tuple(let a): !a.isEmpty
        case .dict(let d): d.count > 0
        case .namespace, .function, .method, .loop: true
        }
    }

    /// Python's type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: "Undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .list: "list"
        case .tuple: "tuple"
        case .dict: "dict"
        case .namespace: "Namespace"
        case .function, .method: "function"
        case .loop: "LoopContext"
        }
    }

    /// The items a sequence holds (lists and tuples).
    var sequenceItems: [JinjaValue]? {
        switch self {
        case .list(let a), .tuple(let a): a
        default: nil
        }
    }
}

/// State of one running for loop, for `loop.index`, `loop.first`, ...
struct LoopState {
    var index0: Int
    var items: [JinjaValue]
    var depth0: Int

    func attribute(_ name: String) -> JinjaValue {
        let length = items.count
        switch name {
        case "index": return .int(index0 + 1)
        case "index0": return .int(index0)
        case "revindex": return .int(length - index0)
        case "revindex0": return .int(length - index0 - 1)
        case "first": return .bool(index0 == 0)
        case "last": return .bool(index0 == length - 1)
        case "length": return .int(length)
        case "depth": return .int(depth0 + 1)
        case "depth0": return .int(depth0)
        case "previtem": return index0 > 0 ? items[index0 - 1] : .undefined("there is no previous item")
        case "nextitem": return index0 + 1 < length ? items[index0 + 1] : .undefined("there is no next item")
        default: return .undefined("'LoopContext' object has no attribute '\(name)'")
        }
    }
}

// MARK: - From JSON

extension JinjaValue {
    /// A JSON value as Python's `json.loads` would give it.
    init(json: JSON) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i):
            if let small = Int(exactly: i) { self = .int(small) } else { self = .double(Double(i)) }
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .list(a.map(JinjaValue.init(json:)))
        case .object(let members): self = .dict(JinjaDict(members.map { ($0.key, JinjaValue(json: $0.value)) }))
        }
    }
}

// MARK: - Python's str() and repr()

extension JinjaValue {
    /// What `{{ value }}` prints: Python's `str(value)`, empty for undefined.
    var pythonString: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return pythonRepr
        }
    }

    /// Python's `repr(value)` (how values print inside lists and dicts). Writing stops soon after
    /// `JinjaLimits.stringBytes` (a list can repeat one long string many times): a result longer
    /// than that is refused wherever it is used. A namespace inside a namespace prints as
    /// `<Namespace {...}>`, as Python prints one that holds itself.
    var pythonRepr: String {
        var out = ""
        writeRepr(into: &out, insideNamespace: false)
        return out
    }

    private func writeRepr(into out: inout String, insideNamespace: Bool) {
        func items(_ a: [JinjaValue], _ open: String, _ close: String) {
            out += open
            for (i, v) in a.enumerated() {
                if out.utf8.count > JinjaLimits.stringBytes { return }
                if i > 0 { out += ", " }
                v.writeRepr(into: &out, insideNamespace: insideNamespace)
            }
            out += close
        }
        switch self {
        case .undefined: return
        case .none: out += "None"
        case .bool(let b): out += b ? "True" : "False"
        case .int(let i): out += String(i)
        case .double(let d): out += Self.pythonFloat(d)
        case .string(let s): out += Self.pythonStringRepr(s)
        case .list(let a): items(a, "[", "]")
        case .tuple(let a): items(a, "(", a.count == 1 ? ",)" : ")")
        case .dict(let d):
            out += "{"
            for (i, e) in d.entries.enumerated() {
                if out.utf8.count > JinjaLimits.stringBytes { return }
                if i > 0 { out += ", " }
                out += Self.pythonStringRepr(e.key) + ": "
                e.value.writeRepr(into: &out, insideNamespace: insideNamespace)
            }
            out += "}"
        case .namespace(let ns):
            if insideNamespace { out += "<Namespace {...}>"; return }
            out += "<Namespace "
            JinjaValue.dict(ns.attributes).writeRepr(into: &out, insideNamespace: true)
            out += ">"
        case .function(let name): out += "<function \(name)>"
        case .method(_, let name): out += "<built-in method \(name)>"
        case .loop: out += "<LoopContext>"
        }
    }

    /// `repr(float)`: the shortest digits that round-trip, exponent form below 1e-4 and from 1e16,
    /// which is also how Swift's `description` writes doubles.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        return d.description
    }

    /// `repr(str)`: single quotes unless the text has a single quote and no double quote; backslash
    /// escapes for the quote, backslash, \t \n \r and characters Python does not print.
    static func pythonStringRepr(_ s: String) -> String {
        let quote: Unicode.Scalar = s.utf8.contains(UInt8(ascii: "'")) && !s.utf8.contains(UInt8(ascii: "\"")) ? "\"" : "'"
        // Printable ASCII without the quote or a backslash is copied as it is.
        let q = UInt8(quote.value)
        if s.utf8.allSatisfy({ (0x20...0x7E).contains($0) && $0 != q && $0 != UInt8(ascii: "\\") }) {
            return String(quote) + s + String(quote)
        }
        var out = String(quote)
        out.reserveCapacity(s.utf8.count + 2)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default:
                if scalar == quote {
                    out += "\\" + String(quote)
                } else if isPythonPrintable(scalar) {
                    out.unicodeScalars.append(scalar)
                } else if scalar.value < 0x100 {
                    out += "\\x" + hex(scalar.value, width: 2)
                } else if scalar.value < 0x10000 {
                    out += "\\u" + hex(scalar.value, width: 4)
                } else {
                    out += "\\U" + hex(scalar.value, width: 8)
                }
            }
        }
        out.unicodeScalars.append(quote)
        return out
    }

    private static func hex(_ v: UInt32, width: Int) -> String {
        let digits = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// Python's `str.isprintable` for one character: not a control, format, surrogate, private-use,
    /// unassigned or separator character, except the space.
    private static func isPythonPrintable(_ scalar: Unicode.Scalar) -> Bool {
        if (0x20...0x7E).contains(scalar.value) { return true }
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned,
             .lineSeparator, .paragraphSeparator, .spaceSeparator: return false
        default: return true
        }
    }
}

// MARK: - Python string helpers

enum PythonString {
    /// Python's `str.isspace` characters (what `strip()`, `split()` and the lexer's `\s` use).
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
        default: false
        }
    }

    static func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

    static func string(_ scalars: some Sequence<Unicode.Scalar>) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars)
        return String(s)
    }

    /// `str.strip(chars)` / `lstrip` / `rstrip`; nil chars: whitespace.
    static func strip(_ s: String, chars: String?, leading: Bool = true, trailing: Bool = true) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        let strips: (Unicode.Scalar) -> Bool = { c in set.map { $0.contains(c) } ?? isSpace(c) }
        var a = scalars(s)[...]
        if leading { while let f = a.first, strips(f) { a = a.dropFirst() } }
        if trailing { while let l = a.last, strips(l) { a = a.dropLast() } }
        return string(a)
    }

    static func equal(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    /// Code point order, as Python compares strings.
    static func less(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
    }

    static func contains(_ haystack: String, _ needle: String) -> Bool {
        needle.isEmpty || !occurrences(of: needle, in: haystack, limit: 1).isEmpty
    }

    /// Index (in scalars) of the first occurrence of `needle`, like `str.find`.
    static func find(_ haystack: String, _ needle: String) -> Int? {
        if needle.isEmpty { return 0 }
        guard let offset = occurrences(of: needle, in: haystack, limit: 1).first else { return nil }
        // Scalars before the match: the bytes that start one.
        return haystack.utf8.prefix(offset).reduce(0) { $0 + ($1 & 0xC0 != 0x80 ? 1 : 0) }
    }

    /// `str.count(sub)`.
    static func count(_ haystack: String, _ needle: String) -> Int {
        needle.isEmpty ? haystack.unicodeScalars.count + 1 : occurrences(of: needle, in: haystack, limit: -1).count
    }

    /// Byte offsets of the non-overlapping occurrences of `needle` (not empty) in `haystack`, left to
    /// right, at most `limit` of them (negative: all). The search is Knuth-Morris-Pratt on UTF-8
    /// bytes (linear time), which finds exactly the scalar matches: a valid UTF-8 needle can only
    /// match where a scalar starts.
    static func occurrences(of needle: String, in haystack: String, limit: Int) -> [Int] {
        let n = Array(needle.utf8)
        precondition(!n.isEmpty, "occurrences of an empty string")
        // fail[i]: length of the longest proper border of n[0...i].
        var fail = [Int](repeating: 0, count: n.count)
        var k = 0
        for i in 1..<max(1, n.count) {
            while k > 0, n[i] != n[k] { k = fail[k - 1] }
            if n[i] == n[k] { k += 1 }
            fail[i] = k
        }
        var found: [Int] = []
        var matched = 0
        for (offset, byte) in haystack.utf8.enumerated() {
            if limit >= 0, found.count >= limit { break }
            while matched > 0, byte != n[matched] { matched = fail[matched - 1] }
            if byte == n[matched] { matched += 1 }
            if matched == n.count {
                found.append(offset + 1 - n.count)
                matched = 0  // non-overlapping: start afresh after a match
            }
        }
        return found
    }

    static func hasPrefix(_ s: String, _ p: String) -> Bool { s.unicodeScalars.starts(with: p.unicodeScalars) }
    static func hasSuffix(_ s: String, _ p: String) -> Bool {
        s.unicodeScalars.reversed().starts(with: p.unicodeScalars.reversed())
    }

    /// `str.split(sep, maxsplit)`: on runs of whitespace without a separator (empty pieces dropped).
    static func split(_ s: String, separator: String?, maxSplit: Int) -> [String] {
        var parts: [String] = []
        if let separator {
            let bytes = Array(s.utf8), width = separator.utf8.count
            var start = 0
            for offset in occurrences(of: separator, in: s, limit: maxSplit) {
                parts.append(String(decoding: bytes[start..<offset], as: UTF8.self))
                start = offset + width
            }
            parts.append(String(decoding: bytes[start...], as: UTF8.self))
            return parts
        }
        let a = scalars(s)
        var i = 0
        while i < a.count {
            while i < a.count, isSpace(a[i]) { i += 1 }
            if i == a.count { break }
            if maxSplit >= 0, parts.count == maxSplit {
                var rest = a[i...]
                while let l = rest.last, isSpace(l) { rest = rest.dropLast() }
                parts.append(string(rest))
                break
            }
            let start = i
            while i < a.count, !isSpace(a[i]) { i += 1 }
            parts.append(string(a[start..<i]))
        }
        return parts
    }

    /// `str.replace(old, new, count)`, or nil when the result would be longer than `maxBytes`.
    static func replace(_ s: String, _ old: String, _ new: String, count: Int, maxBytes: Int) -> String? {
        if old.isEmpty {
            // Python inserts `new` between every character (and at both ends).
            let a = scalars(s), n = scalars(new)
            let inserts = count < 0 ? a.count + 1 : min(count, a.count + 1)
            guard let extra = JinjaBudget.product(inserts, new.utf8.count), s.utf8.count + extra <= maxBytes else { return nil }
            var out: [Unicode.Scalar] = []
            var done = 0
            for c in a {
                if done < inserts { out += n; done += 1 }
                out.append(c)
            }
            if done < inserts { out += n }
            return string(out)
        }
        let hits = occurrences(of: old, in: s, limit: count)
        let growth = new.utf8.count - old.utf8.count
        guard let extra = JinjaBudget.product(hits.count, growth), s.utf8.count + extra <= maxBytes else { return nil }
        let bytes = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + max(0, extra))
        var start = 0
        for offset in hits {
            out += bytes[start..<offset]
            out += new.utf8
            start = offset + old.utf8.count
        }
        out += bytes[start...]
        return String(decoding: out, as: UTF8.self)
    }

    static func upper(_ s: String) -> String { s.uppercased() }
    static func lower(_ s: String) -> String { s.lowercased() }

    private static func titlecased(_ c: Unicode.Scalar) -> String { c.properties.titlecaseMapping }

    /// `str.capitalize()`: the first character in title case, the rest lower case.
    static func capitalize(_ s: String) -> String {
        let a = scalars(s)
        guard let first = a.first else { return "" }
        return titlecased(first) + lower(string(a.dropFirst()))
    }

    /// `str.title()`: title case after any uncased character, lower case after a cased one.
    static func title(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            out += previousCased ? c.properties.lowercaseMapping : titlecased(c)
            previousCased = c.properties.isCased
        }
        return out
    }
}
