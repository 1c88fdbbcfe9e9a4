/// A recursive-descent JSON parser over UTF-8 bytes (RFC 8259, strict). Why not `JSONDecoder`:
/// decoding an untyped value with it means trying each type in turn, one thrown error per
/// mismatch; and a nesting limit keeps a hostile body from exhausting the stack.
struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    mutating func document() throws -> JSON {
        skipSpace()
        let value = try self.value(depth: 0)
        skipSpace()
        guard i == bytes.count else { throw fail("unexpected data after the JSON value") }
        return value
    }

    private func fail(_ reason: String) -> APIError {
        .invalidJSON(i < bytes.count ? "\(reason) at byte \(i)" : "\(reason) at the end of the body")
    }

    private func byte(_ c: Unicode.Scalar) -> UInt8 { UInt8(ascii: c) }

    private func at(_ c: Unicode.Scalar) -> Bool { i < bytes.count && bytes[i] == UInt8(ascii: c) }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private mutating func value(depth: Int) throws -> JSON {
        guard i < bytes.count else { throw fail(bytes.isEmpty ? "the body is empty" : "a value is missing") }
        guard depth < JSON.maxDepth else { throw fail("nesting deeper than \(JSON.maxDepth) levels") }
        switch bytes[i] {
        case byte("{"): return try object(depth: depth)
        case byte("["): return try array(depth: depth)
        case byte("\""): return .string(try string())
        case byte("t"): try literal("true"); return .bool(true)
        case byte("f"): try literal("false"); return .bool(false)
        case byte("n"): try literal("null"); return .null
        case byte("-"), byte("0")...byte("9"): return try number()
        default: throw fail("unexpected character")
        }
    }

    private mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, bytes[i..<(i + w.count)].elementsEqual(w) else { throw fail("invalid literal") }
        i += w.count
    }

    private mutating func object(depth: Int) throws -> JSON {
        i += 1
        var members: [(String, JSON)] = []
        skipSpace()
        if at("}") { i += 1; return .object(members) }
        while true {
            skipSpace()
            guard at("\"") else { throw fail("expected a member name") }
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

    private mutating func array(depth: Int) throws -> JSON {
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

    private mutating func string() throws -> String {
        i += 1
        var out: [UInt8] = []
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            i += 1
            if c == byte("\"") { break }
            if c < 0x20 { i -= 1; throw fail("control character in a string") }
            if c != byte("\\") {
                out.append(c)
                continue
            }
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case byte("\""), byte("\\"), byte("/"): out.append(e)
            case byte("b"): out.append(0x08)
            case byte("f"): out.append(0x0C)
            case byte("n"): out.append(0x0A)
            case byte("r"): out.append(0x0D)
            case byte("t"): out.append(0x09)
            case byte("u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A high surrogate must be followed by an escaped low one.
                    guard at("\\"), i + 1 < bytes.count, bytes[i + 1] == byte("u") else { throw fail("unpaired surrogate") }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw fail("unpaired surrogate")
                }
                out.append(contentsOf: Array(String(Unicode.Scalar(scalar)!).utf8))
            default:
                throw fail("invalid escape")
            }
        }
        guard let text = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
        return text
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt8
            switch c {
            case byte("0")...byte("9"): d = c - byte("0")
            case byte("a")...byte("f"): d = c - byte("a") + 10
            case byte("A")...byte("F"): d = c - byte("A") + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    private mutating func digits() -> Int {
        let start = i
        while i < bytes.count, (byte("0")...byte("9")).contains(bytes[i]) { i += 1 }
        return i - start
    }

    private mutating func number() throws -> JSON {
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
