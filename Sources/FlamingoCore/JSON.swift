import Foundation

/// A JSON value, parsed strictly (RFC 8259) from UTF-8 bytes and written compactly. One type for
/// everything the system reads or writes by hand: tokenizer.json (whose vocabularies need keys
/// exactly as written) and the server's request and response bodies (every field checked by hand
/// and reported with its path; responses keep member order and `null` members).
///
/// Why not `JSONDecoder`/`JSONSerialization`: objects become dictionaries keyed by Swift `String`,
/// whose equality is canonical equivalence, so vocabulary entries such as "Ω" (U+2126) and "Ω"
/// (U+03A9) would collapse into one key, while the Rust tokenizer keeps them apart; decoding an
/// untyped value means trying each type in turn; and there is no bound on nesting for hostile input.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    /// Integers that fit in Int64 are kept exact (seeds, token ids, counts).
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    /// Members in document order, keys exactly as written.
    case object([(key: String, value: JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.int(let x), .int(let y)): x == y
        case (.double(let x), .double(let y)): x == y
        case (.int(let x), .double(let y)), (.double(let y), .int(let x)): Double(x) == y
        case (.string(let x), .string(let y)): x.utf8.elementsEqual(y.utf8)
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)):
            x.count == y.count && zip(x, y).allSatisfy { $0.key.utf8.elementsEqual($1.key.utf8) && $0.value == $1.value }
        default: false
        }
    }
}

/// Why a document is not JSON, and where.
public struct JSONSyntaxError: Error, Equatable, CustomStringConvertible {
    public let reason: String
    /// Byte offset of the problem; nil at the end of the input.
    public let offset: Int?

    public init(reason: String, offset: Int?) {
        self.reason = reason
        self.offset = offset
    }

    public var description: String { offset.map { "\(reason) at byte \($0)" } ?? "\(reason) at the end of the input" }
}

// MARK: - Reading

extension JSON {
    /// Parses a complete document. A UTF-8 byte-order mark is skipped (some editors write one).
    /// - Parameter maxDepth: deepest nesting allowed (a bound on the parser's recursion).
    public static func parse(_ data: Data, maxDepth: Int = 512) throws(JSONSyntaxError) -> JSON {
        do {
            return try data.withUnsafeBytes { raw in
                var parser = Parser(bytes: raw.bindMemory(to: UInt8.self), maxDepth: maxDepth)
                return try parser.document()
            }
        } catch let error as JSONSyntaxError {
            throw error
        } catch {
            fatalError("unreachable: the parser throws only JSONSyntaxError")
        }
    }

    /// The member `key` of an object (byte-exact; the last of duplicate keys, as most parsers
    /// do); nil when absent, or for other kinds of values.
    public subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        let wanted = key.utf8
        return members.last { $0.key.utf8.elementsEqual(wanted) }?.value
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// Any number, as a Double.
    public var doubleValue: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }

    /// An integral number in Int's range (`2`, also `2.0`), else nil.
    public var intValue: Int? {
        switch self {
        case .int(let i): Int(exactly: i)
        case .double(let d): d.rounded() == d && abs(d) < 9.0e15 ? Int(d) : nil
        default: nil
        }
    }

    public var arrayValue: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectMembers: [(key: String, value: JSON)]? {
        if case .object(let m) = self { return m }
        return nil
    }

    /// The kind of value, as error messages name it ("expected X, but got Y").
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

// MARK: - Writing

extension JSON {
    /// Compact UTF-8 JSON (no spaces), members in order.
    public var serialized: Data { Data(serializedString.utf8) }

    public var serializedString: String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isFinite {
                // Integral doubles print without exponent or ".0" noise; others round-trip.
                if d == d.rounded(), abs(d) < 1e15 { out += String(Int64(d)) } else { out += "\(d)" }
            } else {
                out += "null"
            }
        case .string(let s): JSON.writeString(s, into: &out)
        case .array(let elements):
            out += "["
            for (i, e) in elements.enumerated() {
                if i > 0 { out += "," }
                e.write(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                JSON.writeString(member.key, into: &out)
                out += ":"
                member.value.write(into: &out)
            }
            out += "}"
        }
    }

    private static func writeString(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
                ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByFloatLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(floatLiteral value: Double) { self = .double(value) }

    public init(_ value: Int) { self = .int(Int64(value)) }
    public init(_ value: String?) { self = value.map { .string($0) } ?? .null }
}

// MARK: - Parser

/// Recursive descent over UTF-8 bytes, depth-bounded.
private struct Parser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    private var i = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    mutating func document() throws(JSONSyntaxError) -> JSON {
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { i = 3 }
        skipSpace()
        let value = try self.value(depth: 0)
        skipSpace()
        guard i == bytes.count else { throw fail("unexpected data after the JSON value") }
        return value
    }

    private func fail(_ reason: String) -> JSONSyntaxError {
        JSONSyntaxError(reason: reason, offset: i < bytes.count ? i : nil)
    }

    private func at(_ c: Unicode.Scalar) -> Bool { i < bytes.count && bytes[i] == UInt8(ascii: c) }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private mutating func value(depth: Int) throws(JSONSyntaxError) -> JSON {
        guard i < bytes.count else { throw fail(bytes.isEmpty ? "the input is empty" : "a value is missing") }
        guard depth < maxDepth else { throw fail("nesting deeper than \(maxDepth) levels") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard i + w.count <= bytes.count, bytes[i..<(i + w.count)].elementsEqual(w) else { throw fail("invalid literal") }
        i += w.count
    }

    private mutating func object(depth: Int) throws(JSONSyntaxError) -> JSON {
        i += 1
        var members: [(key: String, value: JSON)] = []
        skipSpace()
        if at("}") { i += 1; return .object(members) }
        while true {
            skipSpace()
            guard at("\"") else { throw fail("expected a string key") }
            let key = try string()
            skipSpace()
            guard at(":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            members.append((key, try value(depth: depth + 1)))
            skipSpace()
            if at(",") { i += 1; continue }
            if at("}") { i += 1; return .object(members) }
            throw fail(i < bytes.count ? "expected ',' or '}'" : "unterminated object")
        }
    }

    private mutating func array(depth: Int) throws(JSONSyntaxError) -> JSON {
        i += 1
        var elements: [JSON] = []
        skipSpace()
        if at("]") { i += 1; return .array(elements) }
        while true {
            skipSpace()
            elements.append(try value(depth: depth + 1))
            skipSpace()
            if at(",") { i += 1; continue }
            if at("]") { i += 1; return .array(elements) }
            throw fail(i < bytes.count ? "expected ',' or ']'" : "unterminated array")
        }
    }

    private mutating func string() throws(JSONSyntaxError) -> String {
        i += 1  // opening quote
        let start = i
        // Fast path: no escapes, so the bytes are validated and copied in one go.
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let text = try validated(UnsafeBufferPointer(rebasing: bytes[start..<i]))
                i += 1
                return text
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail("control character in a string") }
            i += 1
        }
        var out = Array(UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return try out.withUnsafeBufferPointer { (b) throws(JSONSyntaxError) -> String in try validated(b) }
            }
            if c < 0x20 { throw fail("control character in a string") }
            i += 1
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                continue
            }
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code) {
                    // A high surrogate must be followed by an escaped low one.
                    guard at("\\"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "u") else { throw fail("unpaired surrogate") }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(code) {
                    throw fail("unpaired surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
                UTF8.encode(scalar) { out.append($0) }
            default:
                i -= 1
                throw fail("invalid escape")
            }
        }
    }

    /// Decodes UTF-8, rejecting invalid sequences rather than substituting U+FFFD, so corrupt
    /// input is reported instead of producing wrong text.
    private func validated(_ b: UnsafeBufferPointer<UInt8>) throws(JSONSyntaxError) -> String {
        if b.allSatisfy({ $0 < 0x80 }) || UTF8Validation.isValid(b) { return String(decoding: b, as: UTF8.self) }
        throw fail("invalid UTF-8 in a string")
    }

    private mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    private mutating func digits() -> Int {
        let start = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1 }
        return i - start
    }

    private mutating func number() throws(JSONSyntaxError) -> JSON {
        let start = i
        if at("-") { i += 1 }
        if at("0") {
            i += 1
        } else if digits() == 0 {
            throw fail("invalid number")
        }
        var integral = true
        if at(".") {
            i += 1
            integral = false
            guard digits() > 0 else { throw fail("invalid number") }
        }
        if at("e") || at("E") {
            i += 1
            integral = false
            if at("+") || at("-") { i += 1 }
            guard digits() > 0 else { throw fail("invalid number") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if integral, let exact = Int64(text) { return .int(exact) }
        guard let d = Double(text), d.isFinite else { throw fail("number out of range") }
        return .double(d)
    }
}

/// UTF-8 validation without Foundation (`String(validating:)` is not on every platform).
public enum UTF8Validation {
    public static func isValid<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}
