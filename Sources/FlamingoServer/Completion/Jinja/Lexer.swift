// Splits a template into text and tag tokens exactly as Jinja2's lexer (jinja2/lexer.py, 3.1) does
// with the environment transformers renders chat templates in: `trim_blocks=True`,
// `lstrip_blocks=True`, `keep_trailing_newline=False`, default delimiters.
//
// - Newlines (`\r\n`, `\r`, `\n`) become `\n`, and one trailing newline is dropped.
// - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` all whitespace after.
// - trim_blocks: the first newline after `%}` or `#}` is dropped (`+%}` keeps it).
// - lstrip_blocks: spaces and tabs from the start of a line up to `{%` or `{#` are dropped (`{%+`
//   keeps them); never before `{{`.

struct JinjaToken {
    enum Kind: Equatable {
        case text(String)
        case variableBegin, variableEnd, blockBegin, blockEnd
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        /// An operator or punctuation: `+ - * / // % ** ~ [ ] ( ) { } == != > >= < <= = . : | , ;`.
        case op(String)
        case end
    }

    var kind: Kind
    var line: Int
}

struct JinjaLexer {
    private let source: [Unicode.Scalar]
    /// Line number of each offset's line start, for `line(at:)`.
    private let lineStarts: [Int]
    private var pos = 0
    private var tokens: [JinjaToken] = []
    /// Whether the last match ended with a newline (Jinja's `line_starting`, for lstrip_blocks).
    private var lineStarting = true

    static func tokenize(_ template: String) throws(ChatTemplateError) -> [JinjaToken] {
        var lexer = JinjaLexer(template)
        try lexer.run()
        return lexer.tokens
    }

    private init(_ template: String) {
        // Normalise newlines, drop one trailing newline (keep_trailing_newline=False).
        var scalars: [Unicode.Scalar] = []
        var it = Array(template.unicodeScalars)[...]
        while let c = it.popFirst() {
            if c == "\r" {
                if it.first == "\n" { it = it.dropFirst() }
                scalars.append("\n")
            } else {
                scalars.append(c)
            }
        }
        if scalars.last == "\n" { scalars.removeLast() }
        source = scalars
        var starts = [0]
        for (i, c) in scalars.enumerated() where c == "\n" { starts.append(i + 1) }
        lineStarts = starts
    }

    private func line(at offset: Int) -> Int {
        // Number of line starts at or before offset.
        var lo = 0, hi = lineStarts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if lineStarts[mid] <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func matches(_ s: String, at i: Int) -> Bool {
        var j = i
        for c in s.unicodeScalars {
            guard j < source.count, source[j] == c else { return false }
            j += 1
        }
        return true
    }

    private mutating func emit(_ kind: JinjaToken.Kind, at offset: Int) {
        tokens.append(JinjaToken(kind: kind, line: line(at: offset)))
    }

    private mutating func run() throws(ChatTemplateError) {
        while pos < source.count {
            // Root state: text up to the first tag opening.
            var start = pos
            var found: (offset: Int, kind: Character)? = nil
            while start + 1 < source.count {
                if source[start] == "{", ["{", "%", "#"].contains(source[start + 1]) {
                    found = (start, Character(source[start + 1]))
                    break
                }
                start += 1
            }
            guard let (tagStart, kind) = found else {
                emitText(Array(source[pos...]), at: pos)
                return
            }
            var text = Array(source[pos..<tagStart])
            var after = tagStart + 2
            var sign: Unicode.Scalar? = nil
            if after < source.count, source[after] == "-" || source[after] == "+" {
                sign = source[after]
                after += 1
            }
            if sign == "-" {
                while let l = text.last, PythonString.isSpace(l) { text.removeLast() }
            } else if sign != "+", kind != "{" {
                // lstrip_blocks: only whitespace between the line start and the tag.
                let lineStart = (text.lastIndex(of: "\n").map { $0 + 1 }) ?? 0
                if lineStart > 0 || lineStarting {
                    let tail = text[lineStart...]
                    if !tail.isEmpty, tail.allSatisfy(PythonString.isSpace) { text.removeSubrange(lineStart...) }
                }
            }
            emitText(text, at: pos)
            pos = after
            lineStarting = false
            switch kind {
            case "#": try comment(openedAt: tagStart)
            case "%":
                emit(.blockBegin, at: tagStart)
                try tag(block: true, openedAt: tagStart)
            default:
                emit(.variableBegin, at: tagStart)
                try tag(block: false, openedAt: tagStart)
            }
        }
    }

    private mutating func emitText(_ text: [Unicode.Scalar], at offset: Int) {
        if !text.isEmpty { emit(.text(PythonString.string(text)), at: offset) }
    }

    /// Skips whitespace after `-%}`, `-}}`, `-#}`; returns the end.
    private func skippingWhitespace(from i: Int) -> Int {
        var j = i
        while j < source.count, PythonString.isSpace(source[j]) { j += 1 }
        return j
    }

    /// After an end tag ending at `end`: the trim_blocks newline for block and comment ends.
    private mutating func finishTag(matchStart: Int, end: Int) {
        pos = end
        lineStarting = end > matchStart && source[end - 1] == "\n"
    }

    private mutating func comment(openedAt: Int) throws(ChatTemplateError) {
        var i = pos
        while i < source.count {
            if matches("+#}", at: i) { finishTag(matchStart: i, end: i + 3); return }
            if matches("-#}", at: i) { finishTag(matchStart: i, end: skippingWhitespace(from: i + 3)); return }
            if matches("#}", at: i) {
                let end = i + 2 < source.count && source[i + 2] == "\n" ? i + 3 : i + 2
                finishTag(matchStart: i, end: end)
                return
            }
            i += 1
        }
        throw .syntax("missing end of comment tag", line: line(at: openedAt))
    }

    private mutating func tag(block: Bool, openedAt: Int) throws(ChatTemplateError) {
        var balance: [Unicode.Scalar] = []
        while pos < source.count {
            let c = source[pos]
            if balance.isEmpty {
                if block {
                    if matches("+%}", at: pos) { emit(.blockEnd, at: pos); finishTag(matchStart: pos, end: pos + 3); return }
                    if matches("-%}", at: pos) { emit(.blockEnd, at: pos); finishTag(matchStart: pos, end: skippingWhitespace(from: pos + 3)); return }
                    if matches("%}", at: pos) {
                        emit(.blockEnd, at: pos)
                        let end = pos + 2 < source.count && source[pos + 2] == "\n" ? pos + 3 : pos + 2
                        finishTag(matchStart: pos, end: end)
                        return
                    }
                } else {
                    if matches("-}}", at: pos) { emit(.variableEnd, at: pos); finishTag(matchStart: pos, end: skippingWhitespace(from: pos + 3)); return }
                    if matches("}}", at: pos) { emit(.variableEnd, at: pos); finishTag(matchStart: pos, end: pos + 2); return }
                }
            }
            if PythonString.isSpace(c) {
                pos = skippingWhitespace(from: pos)
                continue
            }
            if let (number, end) = number(at: pos) {
                emit(number, at: pos)
                pos = end
                continue
            }
            if c == "_" || (c.isASCII && c.properties.isAlphabetic) {
                var end = pos + 1
                while end < source.count, source[end] == "_" || (source[end].isASCII && (source[end].properties.isAlphabetic || ("0"..."9").contains(source[end]))) {
                    end += 1
                }
                emit(.name(PythonString.string(source[pos..<end])), at: pos)
                pos = end
                continue
            }
            if c == "'" || c == "\"" {
                try string(quote: c)
                continue
            }
            if let op = [ "//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}",
                          ">", "<", "=", ".", ":", "|", ",", ";" ].first(where: { matches($0, at: pos) }) {
                let first = op.unicodeScalars.first!
                switch first {
                case "(": balance.append(")")
                case "[": balance.append("]")
                case "{" where op == "{": balance.append("}")
                case ")", "]", "}":
                    guard let expected = balance.popLast() else { throw .syntax("unexpected '\(op)'", line: line(at: pos)) }
                    guard expected == first else { throw .syntax("unexpected '\(op)', expected '\(expected)'", line: line(at: pos)) }
                default: break
                }
                emit(.op(op), at: pos)
                pos += op.unicodeScalars.count
                continue
            }
            throw .syntax("unexpected character '\(PythonString.string([c]))'", line: line(at: pos))
        }
        // The parser reports the missing end (at the end of the template).
    }

    /// Jinja's float and integer literals (with `_` separators, `0b`/`0o`/`0x` integers).
    private func number(at i: Int) -> (JinjaToken.Kind, Int)? {
        func isDigit(_ j: Int) -> Bool { j < source.count && ("0"..."9").contains(source[j]) }
        guard isDigit(i) else { return nil }
        // A float never starts right after a dot (`(?<!\.)`); an integer may (`items.0`).
        let floatAllowed = i == 0 || source[i - 1] != "."
        /// `(\d+_)*\d+` from j; returns the end or nil.
        func digits(_ j: Int) -> Int? {
            guard isDigit(j) else { return nil }
            var k = j
            while true {
                while isDigit(k) { k += 1 }
                if k < source.count, source[k] == "_", isDigit(k + 1) { k += 1 } else { return k }
            }
        }
        func text(_ a: Int, _ b: Int) -> String { PythonString.string(source[a..<b]).replacingOccurrences(of: "_", with: "") }
        // Float: digits then (fraction? exponent | fraction).
        if floatAllowed, let intEnd = digits(i) {
            var k = intEnd
            var fraction = false
            if k < source.count, source[k] == ".", let f = digits(k + 1) { k = f; fraction = true }
            if k < source.count, source[k] == "e" || source[k] == "E" {
                var e = k + 1
                if e < source.count, source[e] == "+" || source[e] == "-" { e += 1 }
                if let end = digits(e), let d = Double(text(i, end)) { return (.float(d), end) }
            }
            if fraction, let d = Double(text(i, k)) { return (.float(d), k) }
        }
        // Integer.
        if source[i] == "0", i + 1 < source.count, let radix = ["b": 2, "B": 2, "o": 8, "O": 8, "x": 16, "X": 16][Character(source[i + 1])] {
            var k = i + 2
            var value = 0
            var any = false
            while k < source.count {
                if source[k] == "_", k + 1 < source.count, Int(String(source[k + 1]), radix: radix) != nil { k += 1; continue }
                guard let d = Int(String(source[k]), radix: radix) else { break }
                value = value &* radix &+ d
                any = true
                k += 1
            }
            if any { return (.integer(value), k) }
        }
        if source[i] == "0" {
            var k = i + 1
            while k < source.count {
                if source[k] == "0" { k += 1 } else if source[k] == "_", k + 1 < source.count, source[k + 1] == "0" { k += 2 } else { break }
            }
            return (.integer(0), k)
        }
        guard let end = digits(i), let v = Int(text(i, end)) else { return nil }
        return (.integer(v), end)
    }

    /// A quoted string with Python's escapes (`\n`, `\t`, `\\`, `\'`, `\xhh`, `\uhhhh`, octal, ...).
    private mutating func string(quote: Unicode.Scalar) throws(ChatTemplateError) {
        let start = pos
        var i = pos + 1
        var out: [Unicode.Scalar] = []
        func hexValue(_ a: Int, _ n: Int) -> UInt32? {
            guard a + n <= source.count else { return nil }
            return UInt32(PythonString.string(source[a..<(a + n)]), radix: 16)
        }
        while i < source.count, source[i] != quote {
            let c = source[i]
            guard c == "\\", i + 1 < source.count else {
                out.append(c)
                i += 1
                continue
            }
            let e = source[i + 1]
            i += 2
            switch e {
            case "\n": break
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "0"..."7":
                var v = e.value - 0x30
                var n = 1
                while n < 3, i < source.count, ("0"..."7").contains(source[i]) { v = v * 8 + source[i].value - 0x30; i += 1; n += 1 }
                guard let s = Unicode.Scalar(v) else { throw .syntax("invalid octal escape in string", line: line(at: start)) }
                out.append(s)
            case "x", "u", "U":
                let n = e == "x" ? 2 : e == "u" ? 4 : 8
                guard let v = hexValue(i, n), let s = Unicode.Scalar(v) else {
                    throw .syntax("truncated \\\(e) escape in string", line: line(at: start))
                }
                out.append(s)
                i += n
            default:
                // Python keeps unknown escapes as written.
                out.append("\\")
                out.append(e)
            }
        }
        guard i < source.count else { throw .syntax("unterminated string", line: line(at: start)) }
        emit(.string(PythonString.string(out)), at: start)
        pos = i + 1
    }
}
