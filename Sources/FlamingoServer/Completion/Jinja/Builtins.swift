import Foundation

/// The filters, tests, global functions and methods templates may use. Names outside these sets
/// fail at load (`JinjaParser`), so every name here must be implemented below.
enum JinjaBuiltins {
    static let filters: Set<String> = [
        "trim", "length", "count", "default", "d", "upper", "lower", "capitalize", "title", "tojson", "string",
        "join", "first", "last", "list", "items", "reverse", "replace", "int", "float", "abs", "safe",
        "select", "reject", "selectattr", "rejectattr", "map",
    ]
    static let tests: Set<String> = [
        "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
        "mapping", "iterable", "sequence", "callable", "sameas", "in", "eq", "equalto", "==", "ne", "!=",
        "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "even", "odd", "divisibleby",
        "lower", "upper",
    ]
    /// transformers' globals (`raise_exception`, `namespace`, `strftime_now`, `dict`) and Jinja's `range`.
    static let functions: Set<String> = ["raise_exception", "namespace", "strftime_now", "dict", "range"]
    static let stringMethods: Set<String> = [
        "strip", "lstrip", "rstrip", "startswith", "endswith", "upper", "lower", "title", "capitalize", "split",
        "replace", "join", "find", "count",
    ]
    static let dictMethods: Set<String> = ["items", "keys", "values", "get"]
    static var methods: Set<String> { stringMethods.union(dictMethods) }

    // MARK: - Arguments

    /// Positional-or-keyword arguments bound like a Python signature.
    private struct Arguments {
        let callee: String
        let positional: [JinjaValue]
        let keywords: [(String, JinjaValue)]
        let names: [String]
        let line: Int

        init(_ callee: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], names: [String], line: Int) throws(ChatTemplateError) {
            self.callee = callee
            positional = args
            keywords = kwargs
            self.names = names
            self.line = line
            guard args.count <= names.count else {
                throw .render("\(callee)() takes at most \(names.count) argument\(names.count == 1 ? "" : "s") (\(args.count) given)", line: line)
            }
            for (k, _) in kwargs where !names.contains(k) {
                throw .render("\(callee)() got an unexpected keyword argument '\(k)'", line: line)
            }
        }

        subscript(_ name: String) -> JinjaValue? {
            if let i = names.firstIndex(of: name), i < positional.count { return positional[i] }
            return keywords.last { $0.0 == name }?.1
        }

        func string(_ name: String) throws(ChatTemplateError) -> String? {
            switch self[name] {
            case nil, .none?: return nil
            case .string(let s)?: return s
            case let v?: throw .render("\(callee)() argument '\(name)' must be str, not \(v.typeName)", line: line)
            }
        }

        func int(_ name: String) throws(ChatTemplateError) -> Int? {
            switch self[name] {
            case nil, .none?: return nil
            case .int(let i)?: return i
            case .bool(let b)?: return b ? 1 : 0
            case let v?: throw .render("\(callee)() argument '\(name)' must be int, not \(v.typeName)", line: line)
            }
        }

        func required(_ name: String) throws(ChatTemplateError) -> JinjaValue {
            guard let v = self[name] else { throw .render("\(callee)() missing required argument '\(name)'", line: line) }
            return v
        }
    }

    // MARK: - Functions

    static func callFunction(_ name: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)],
                             renderer: JinjaRenderer, line: Int) throws(ChatTemplateError) -> JinjaValue {
        switch name {
        case "raise_exception":
            let a = try Arguments(name, args, kwargs, names: ["message"], line: line)
            throw .raised(try a.required("message").pythonString)
        case "namespace", "dict":
            guard args.count <= 1 else { throw .render("\(name)() expected at most 1 positional argument", line: line) }
            var d = JinjaDict()
            if let first = args.first {
                guard case .dict(let given) = first else { throw .render("\(name)() argument must be a mapping", line: line) }
                d = given
            }
            for (k, v) in kwargs { d[k] = v }
            try renderer.checkNesting(d.entries.map(\.value), line: line)
            guard name == "namespace" else { return .dict(d) }
            if let bad = d.keys.first(where: { $0.hasPrefix("_") }) {
                throw .render("chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(bad)'", line: line)
            }
            let ns = JinjaNamespace(d)
            renderer.adopt(ns)
            return .namespace(ns)
        case "range":
            guard kwargs.isEmpty, (1...3).contains(args.count) else { throw .render("range() takes 1 to 3 integer arguments", line: line) }
            var ints: [Int] = []
            for a in args {
                switch a {
                case .int(let i): ints.append(i)
                case .bool(let b): ints.append(b ? 1 : 0)
                default: throw .render("'\(a.typeName)' object cannot be interpreted as an integer", line: line)
                }
            }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard step != 0 else { throw .render("range() arg 3 must not be zero", line: line) }
            // The sandbox's MAX_RANGE, checked before the list is made.
            let (span, overflow) = step > 0 ? stop.subtractingReportingOverflow(start) : start.subtractingReportingOverflow(stop)
            let count = overflow ? Int.max : span <= 0 ? 0 : (span - 1) / step.magnitude.clampedToInt + 1
            guard count <= 100_000 else { throw .render("range too big: the sandbox allows at most 100000 items", line: line) }
            return .list(stride(from: start, to: stop, by: step).map { .int($0) })
        case "strftime_now":
            let a = try Arguments(name, args, kwargs, names: ["format"], line: line)
            guard let format = try a.string("format") else { throw .render("strftime_now() needs a format string", line: line) }
            return .string(try Strftime.format(format, renderer.now, timeZone: renderer.timeZone, line: line))
        default:
            throw .render("unknown function '\(name)'", line: line)
        }
    }

    // MARK: - Methods

    static func callMethod(_ name: String, on receiver: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)],
                           line: Int) throws(ChatTemplateError) -> JinjaValue {
        if case .dict(let d) = receiver {
            switch name {
            case "items":
                _ = try Arguments(name, args, kwargs, names: [], line: line)
                return .list(d.entries.map { .tuple([.string($0.key), $0.value]) })
            case "keys":
                _ = try Arguments(name, args, kwargs, names: [], line: line)
                return .list(d.keys.map { .string($0) })
            case "values":
                _ = try Arguments(name, args, kwargs, names: [], line: line)
                return .list(d.entries.map(\.value))
            case "get":
                let a = try Arguments(name, args, kwargs, names: ["key", "default"], line: line)
                guard case .string(let k) = try a.required("key") else { return a["default"] ?? .none }
                return d[k] ?? a["default"] ?? .none
            default: break
            }
        }
        guard case .string(let s) = receiver else {
            throw .render("'\(receiver.typeName)' object has no attribute '\(name)'", line: line)
        }
        switch name {
        case "strip", "lstrip", "rstrip":
            let a = try Arguments(name, args, kwargs, names: ["chars"], line: line)
            return .string(PythonString.strip(s, chars: try a.string("chars"), leading: name != "rstrip", trailing: name != "lstrip"))
        case "startswith", "endswith":
            let a = try Arguments(name, args, kwargs, names: ["prefix"], line: line)
            let affixes: [JinjaValue]
            switch try a.required("prefix") {
            case .string(let p): affixes = [.string(p)]
            case .tuple(let t), .list(let t): affixes = t
            case let v: throw .render("\(name) first arg must be str or a tuple of str, not \(v.typeName)", line: line)
            }
            for case .string(let p) in affixes where name == "startswith" ? PythonString.hasPrefix(s, p) : PythonString.hasSuffix(s, p) {
                return .bool(true)
            }
            return .bool(false)
        case "upper", "lower", "title", "capitalize":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            switch name {
            case "upper": return .string(PythonString.upper(s))
            case "lower": return .string(PythonString.lower(s))
            case "title": return .string(PythonString.title(s))
            default: return .string(PythonString.capitalize(s))
            }
        case "split":
            let a = try Arguments(name, args, kwargs, names: ["sep", "maxsplit"], line: line)
            let sep = try a.string("sep")
            if sep == "" { throw .render("empty separator", line: line) }
            // At most one piece per byte and one more, whatever the separator.
            try JinjaBudget.check(listItems: s.utf8.count + 1, line: line)
            return .list(PythonString.split(s, separator: sep, maxSplit: try a.int("maxsplit") ?? -1).map { .string($0) })
        case "replace":
            let a = try Arguments(name, args, kwargs, names: ["old", "new", "count"], line: line)
            guard let old = try a.string("old"), let new = try a.string("new") else { throw .render("replace() needs two strings", line: line) }
            return .string(try replace(s, old, new, count: try a.int("count") ?? -1, line: line))
        case "join":
            let a = try Arguments(name, args, kwargs, names: ["iterable"], line: line)
            var parts: [String] = []
            for (i, item) in try iterable(try a.required("iterable"), line: line).enumerated() {
                guard case .string(let p) = item else {
                    throw .render("sequence item \(i): expected str instance, \(item.typeName) found", line: line)
                }
                parts.append(p)
            }
            return .string(try join(parts, separator: s, line: line))
        case "find", "count":
            let a = try Arguments(name, args, kwargs, names: ["sub"], line: line)
            guard let sub = try a.string("sub") else { throw .render("\(name)() needs a string", line: line) }
            if name == "find" { return .int(PythonString.find(s, sub) ?? -1) }
            return .int(PythonString.count(s, sub))
        default:
            throw .render("'str' object has no attribute '\(name)'", line: line)
        }
    }

    private static func iterable(_ v: JinjaValue, line: Int) throws(ChatTemplateError) -> [JinjaValue] {
        switch v {
        case .list(let a), .tuple(let a): return a
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s):
            try JinjaBudget.check(listItems: s.unicodeScalars.count, line: line)
            return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw .render("'\(v.typeName)' object is not iterable", line: line)
        }
    }

    // MARK: - Filters

    static func filter(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)],
                       renderer: JinjaRenderer, line: Int) throws(ChatTemplateError) -> JinjaValue {
        switch name {
        case "trim":
            let a = try Arguments(name, args, kwargs, names: ["chars"], line: line)
            return .string(PythonString.strip(value.pythonString, chars: try a.string("chars")))
        case "length", "count":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            switch value {
            case .undefined: return .int(0)
            case .string(let s): return .int(s.unicodeScalars.count)
            case .list(let a), .tuple(let a): return .int(a.count)
            case .dict(let d): return .int(d.count)
            default: throw .render("object of type '\(value.typeName)' has no len()", line: line)
            }
        case "default", "d":
            let a = try Arguments(name, args, kwargs, names: ["default_value", "boolean"], line: line)
            if value.isUndefined || ((a["boolean"]?.truthy ?? false) && !value.truthy) {
                return a["default_value"] ?? .string("")
            }
            return value
        case "upper", "lower", "capitalize", "title":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            let s = value.pythonString
            switch name {
            case "upper": return .string(PythonString.upper(s))
            case "lower": return .string(PythonString.lower(s))
            case "capitalize": return .string(PythonString.capitalize(s))
            default: return .string(titleFilter(s))
            }
        case "string":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            return .string(value.pythonString)
        case "safe":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            return value
        case "tojson":
            // transformers' replacement: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
            let a = try Arguments(name, args, kwargs, names: ["ensure_ascii", "indent", "separators", "sort_keys"], line: line)
            var options = PythonJSON.Options()
            options.ensureASCII = a["ensure_ascii"]?.truthy ?? false
            options.sortKeys = a["sort_keys"]?.truthy ?? false
            switch a["indent"] {
            case nil, .none?: options.indent = nil
            case .int(let n)?:
                try JinjaBudget.check(stringBytes: n, line: line)
                options.indent = String(repeating: " ", count: max(0, n))
            case .string(let s)?: options.indent = s
            case let v?: throw .render("tojson indent must be an int or a string, not \(v.typeName)", line: line)
            }
            if let seps = a["separators"], !seps.isNone {
                guard let items = seps.sequenceItems, items.count == 2, case .string(let item) = items[0], case .string(let key) = items[1] else {
                    throw .render("tojson separators must be a pair of strings", line: line)
                }
                options.separators = (item, key)
            }
            return .string(try PythonJSON.dumps(value, options, line: line))
        case "join":
            let a = try Arguments(name, args, kwargs, names: ["d", "attribute"], line: line)
            let separator = try a.string("d") ?? ""
            var parts: [String] = []
            for item in try iterable(value, line: line) {
                parts.append(try attributePath(item, a["attribute"], renderer: renderer, line: line).pythonString)
            }
            return .string(try join(parts, separator: separator, line: line))
        case "first", "last":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            let items = try iterable(value, line: line)
            guard let item = name == "first" ? items.first : items.last else {
                return .undefined("No \(name) item, sequence was empty.")
            }
            return item
        case "list":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            return .list(try iterable(value, line: line))
        case "items":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            switch value {
            case .undefined: return .list([])
            case .dict(let d): return .list(d.entries.map { .tuple([.string($0.key), $0.value]) })
            default: throw .render("Can only get item pairs from a mapping.", line: line)
            }
        case "reverse":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            if case .string(let s) = value { return .string(PythonString.string(s.unicodeScalars.reversed())) }
            return .list(try iterable(value, line: line).reversed())
        case "replace":
            let a = try Arguments(name, args, kwargs, names: ["old", "new", "count"], line: line)
            guard let old = try a.string("old"), let new = try a.string("new") else { throw .render("replace needs two strings", line: line) }
            return .string(try replace(value.pythonString, old, new, count: try a.int("count") ?? -1, line: line))
        case "int":
            let a = try Arguments(name, args, kwargs, names: ["default", "base"], line: line)
            let fallback = a["default"] ?? .int(0)
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : fallback
            case .string(let s):
                if let i = PythonNumber.int(s, base: try a.int("base") ?? 10) { return .int(i) }
                if let d = PythonNumber.float(s), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return fallback
            default: return fallback
            }
        case "float":
            let a = try Arguments(name, args, kwargs, names: ["default"], line: line)
            let fallback = a["default"] ?? .double(0)
            switch value {
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .double: return value
            case .string(let s): return PythonNumber.float(s).map { .double($0) } ?? fallback
            default: return fallback
            }
        case "abs":
            _ = try Arguments(name, args, kwargs, names: [], line: line)
            switch value {
            case .int(let i): return .int(abs(i))
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(abs(d))
            default: throw .render("bad operand type for abs(): '\(value.typeName)'", line: line)
            }
        case "select", "reject", "selectattr", "rejectattr":
            // (attribute,) test name, test arguments...
            let byAttribute = name.hasSuffix("attr")
            guard kwargs.isEmpty else { throw .render("\(name) takes no keyword arguments here", line: line) }
            var rest = args[...]
            var attribute: JinjaValue? = nil
            if byAttribute {
                guard let first = rest.popFirst() else { throw .render("\(name) needs an attribute", line: line) }
                attribute = first
            }
            var testName: String? = nil
            if let t = rest.popFirst() {
                guard case .string(let n) = t, tests.contains(n) else { throw .render("\(name): no test named \(t.pythonRepr)", line: line) }
                testName = n
            }
            let keep = name.hasPrefix("select")
            var kept: [JinjaValue] = []
            for item in try iterable(value, line: line) {
                try renderer.charge(steps: 1, line: line)
                let subject = try attributePath(item, attribute, renderer: renderer, line: line)
                let passes = try testName.map { n throws(ChatTemplateError) in try test(n, subject, Array(rest), renderer: renderer, line: line) } ?? subject.truthy
                if passes == keep { kept.append(item) }
            }
            return .list(kept)
        case "map":
            var kwargs = kwargs
            if let attrIndex = kwargs.firstIndex(where: { $0.0 == "attribute" }) {
                let attribute = kwargs.remove(at: attrIndex).1
                let fallback = kwargs.first { $0.0 == "default" }?.1
                var out: [JinjaValue] = []
                for item in try iterable(value, line: line) {
                    try renderer.charge(steps: 1, line: line)
                    let v = try attributePath(item, attribute, renderer: renderer, line: line)
                    out.append(v.isUndefined ? (fallback ?? v) : v)
                }
                return .list(out)
            }
            guard case .string(let filterName)? = args.first, filters.contains(filterName) else {
                throw .render("map needs a filter name or attribute=", line: line)
            }
            var out: [JinjaValue] = []
            for item in try iterable(value, line: line) {
                try renderer.charge(steps: 1, line: line)
                out.append(try filter(filterName, item, Array(args.dropFirst()), kwargs, renderer: renderer, line: line))
            }
            return .list(out)
        default:
            throw .render("unknown filter '\(name)'", line: line)
        }
    }

    /// `str.replace` within `JinjaLimits.stringBytes`.
    private static func replace(_ s: String, _ old: String, _ new: String, count: Int, line: Int) throws(ChatTemplateError) -> String {
        guard let r = PythonString.replace(s, old, new, count: count, maxBytes: JinjaLimits.stringBytes) else {
            throw .render("replace() would make a string of more than \(JinjaLimits.stringBytes >> 20) MiB (a limit of this server)", line: line)
        }
        return r
    }

    /// `separator.join(parts)`, its size checked before it is made.
    private static func join(_ parts: [String], separator: String, line: Int) throws(ChatTemplateError) -> String {
        var bytes = JinjaBudget.product(separator.utf8.count, max(0, parts.count - 1)) ?? .max
        for p in parts where bytes <= JinjaLimits.stringBytes { bytes += p.utf8.count }
        try JinjaBudget.check(stringBytes: bytes, line: line)
        return parts.joined(separator: separator)
    }

    /// Jinja's `title` filter (not `str.title`): each word, after `-`, whitespace or an opening
    /// bracket, gets its first character upper-cased and the rest lower-cased.
    private static func titleFilter(_ s: String) -> String {
        func isSeparator(_ c: Unicode.Scalar) -> Bool { PythonString.isSpace(c) || "-({[<".unicodeScalars.contains(c) }
        var out = ""
        var word: [Unicode.Scalar] = []
        func flush() {
            if let first = word.first {
                out += PythonString.upper(String(first)) + PythonString.lower(PythonString.string(word.dropFirst()))
            }
            word = []
        }
        for c in s.unicodeScalars {
            if isSeparator(c) {
                flush()
                out.unicodeScalars.append(c)
            } else {
                word.append(c)
            }
        }
        flush()
        return out
    }

    /// `attribute="a.b.0"` lookups (Jinja's make_attrgetter): each dotted part an item access,
    /// integer parts as indexes.
    private static func attributePath(_ item: JinjaValue, _ attribute: JinjaValue?, renderer: JinjaRenderer, line: Int) throws(ChatTemplateError) -> JinjaValue {
        switch attribute {
        case nil, .none?: return item
        case .int(let i)?: return try renderer.item(item, .int(i), line: line)
        case .string(let path)?:
            var v = item
            for part in path.split(separator: ".", omittingEmptySubsequences: false) {
                let key: JinjaValue = Int(part).map { .int($0) } ?? .string(String(part))
                v = try renderer.item(v, key, line: line)
            }
            return v
        case let a?: throw .render("attribute must be a string, not \(a.typeName)", line: line)
        }
    }

    // MARK: - Tests

    static func test(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], renderer: JinjaRenderer, line: Int) throws(ChatTemplateError) -> Bool {
        func argument() throws(ChatTemplateError) -> JinjaValue {
            guard args.count == 1 else { throw .render("test '\(name)' takes one argument", line: line) }
            return args[0]
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": if case .none = value { return true }; return false
        case "boolean": if case .bool = value { return true }; return false
        case "true": if case .bool(true) = value { return true }; return false
        case "false": if case .bool(false) = value { return true }; return false
        case "integer": if case .int = value { return true }; return false
        case "float": if case .double = value { return true }; return false
        case "number":
            switch value { case .int, .double, .bool: return true; default: return false }
        case "string": return value.isStringValue
        case "mapping": if case .dict = value { return true }; return false
        case "iterable":
            switch value { case .list, .tuple, .dict, .string, .undefined, .loop: return true; default: return false }
        case "sequence":
            switch value { case .list, .tuple, .dict, .string, .undefined: return true; default: return false }
        case "callable":
            switch value { case .function, .method: return true; default: return false }
        case "sameas":
            switch (value, try argument()) {
            case (.none, .none), (.undefined, .undefined): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "in": return try JinjaOps.contains(try argument(), value, line: line)
        case "eq", "equalto", "==": return JinjaOps.equal(value, try argument())
        case "ne", "!=": return !JinjaOps.equal(value, try argument())
        case "lt", "lessthan", "<": return try JinjaOps.compare("<", value, try argument(), line: line)
        case "le", "<=": return try JinjaOps.compare("<=", value, try argument(), line: line)
        case "gt", "greaterthan", ">": return try JinjaOps.compare(">", value, try argument(), line: line)
        case "ge", ">=": return try JinjaOps.compare(">=", value, try argument(), line: line)
        case "even", "odd":
            let r = try JinjaOps.binary("%", value, .int(2), line: line)
            return JinjaOps.equal(r, .int(0)) == (name == "even")
        case "divisibleby":
            return JinjaOps.equal(try JinjaOps.binary("%", value, try argument(), line: line), .int(0))
        case "lower", "upper":
            let s = value.pythonString
            var cased = false
            for c in s.unicodeScalars where c.properties.isCased {
                cased = true
                if name == "lower" ? c.properties.isUppercase || c.properties.generalCategory == .titlecaseLetter : c.properties.isLowercase || c.properties.generalCategory == .titlecaseLetter {
                    return false
                }
            }
            return cased
        default:
            throw .render("unknown test '\(name)'", line: line)
        }
    }
}

extension JinjaValue {
    var isNone: Bool {
        if case .none = self { return true }
        return false
    }
}

// MARK: - Python number parsing (int("..."), float("..."))

enum PythonNumber {
    /// `int(s, base)`: surrounding whitespace, a sign, `_` between digits.
    static func int(_ s: String, base: Int) -> Int? {
        var t = PythonString.strip(s, chars: nil)
        var negative = false
        if t.hasPrefix("-") || t.hasPrefix("+") { negative = t.hasPrefix("-"); t.removeFirst() }
        guard !t.isEmpty, !t.hasPrefix("_"), !t.hasSuffix("_"), !t.contains("__") else { return nil }
        let digits = t.replacingOccurrences(of: "_", with: "")
        guard digits.unicodeScalars.allSatisfy({ $0.isASCII }), let v = Int(digits, radix: base) else { return nil }
        return negative ? -v : v
    }

    /// `float(s)`: decimal and exponent forms, `inf`, `nan`, `_` between digits.
    static func float(_ s: String) -> Double? {
        let t = PythonString.strip(s, chars: nil).lowercased()
        switch t {
        case "inf", "+inf", "infinity", "+infinity": return .infinity
        case "-inf", "-infinity": return -.infinity
        case "nan", "+nan", "-nan": return .nan
        default: break
        }
        guard !t.isEmpty, !t.contains("__"), !t.hasPrefix("_"), !t.hasSuffix("_") else { return nil }
        let plain = t.replacingOccurrences(of: "_", with: "")
        guard plain.unicodeScalars.allSatisfy({ "0123456789+-.e".unicodeScalars.contains($0) }),
              plain.contains(where: \.isNumber) else { return nil }
        return Double(plain)
    }
}

// MARK: - json.dumps

enum PythonJSON {
    struct Options {
        var ensureASCII = false
        var indent: String? = nil
        var separators: (item: String, key: String)? = nil
        var sortKeys = false
    }

    /// `json.dumps(value, ...)` with Python's formatting (`", "`/`": "` separators without indent,
    /// `","` with, floats as `repr`, `NaN`/`Infinity`).
    static func dumps(_ value: JinjaValue, _ options: Options, line: Int) throws(ChatTemplateError) -> String {
        var out = ""
        let separators = options.separators ?? (options.indent == nil ? (", ", ": ") : (",", ": "))
        try write(value, into: &out, level: 0, options: options, separators: separators, line: line)
        return out
    }

    private static func write(_ value: JinjaValue, into out: inout String, level: Int, options: Options,
                              separators: (item: String, key: String), line: Int) throws(ChatTemplateError) {
        func newline(_ level: Int) {
            if let indent = options.indent { out += "\n" + String(repeating: indent, count: level) }
        }
        try JinjaBudget.check(stringBytes: out.utf8.count, line: line)
        switch value {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += JinjaValue.pythonFloat(d) }
        case .string(let s): out += string(s, ensureASCII: options.ensureASCII)
        case .list(let a), .tuple(let a):
            guard !a.isEmpty else { out += "[]"; return }
            out += "["
            for (i, item) in a.enumerated() {
                if i > 0 { out += separators.item }
                newline(level + 1)
                try write(item, into: &out, level: level + 1, options: options, separators: separators, line: line)
            }
            newline(level)
            out += "]"
        case .dict(let d):
            guard d.count > 0 else { out += "{}"; return }
            var entries = d.entries
            if options.sortKeys { entries.sort { PythonString.less($0.key, $1.key) } }
            out += "{"
            for (i, e) in entries.enumerated() {
                if i > 0 { out += separators.item }
                newline(level + 1)
                out += string(e.key, ensureASCII: options.ensureASCII) + separators.key
                try write(e.value, into: &out, level: level + 1, options: options, separators: separators, line: line)
            }
            newline(level)
            out += "}"
        default:
            throw .render("Object of type \(value.typeName) is not JSON serializable", line: line)
        }
    }

    private static func string(_ s: String, ensureASCII: Bool) -> String {
        var out = "\""
        func unit(_ v: UInt32) {
            let h = String(v, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        }
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 {
                    unit(c.value)
                } else if ensureASCII, c.value > 0x7E {
                    if c.value >= 0x10000 {
                        let v = c.value - 0x10000
                        unit(0xD800 + (v >> 10))
                        unit(0xDC00 + (v & 0x3FF))
                    } else {
                        unit(c.value)
                    }
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - strftime

enum Strftime {
    private static let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    private static let months = ["January", "February", "March", "April", "May", "June", "July", "August",
                                 "September", "October", "November", "December"]

    /// Python's `datetime.now().strftime(format)` in the C locale, for the directives chat templates
    /// use (`%d %b %Y`, ...).
    static func format(_ format: String, _ date: Date, timeZone: TimeZone, line: Int) throws(ChatTemplateError) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let year = c.year ?? 1970, month = c.month ?? 1, day = c.day ?? 1
        let hour = c.hour ?? 0, minute = c.minute ?? 0, second = c.second ?? 0, weekday = (c.weekday ?? 1) - 1
        let dayOfYear = calendar.ordinality(of: .day, in: .year, for: date) ?? 1
        func pad(_ v: Int, _ width: Int = 2) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        var out = ""
        var it = format.makeIterator()
        while let ch = it.next() {
            guard ch == "%" else { out.append(ch); continue }
            guard let d = it.next() else { out.append("%"); break }
            switch d {
            case "a": out += String(days[weekday].prefix(3))
            case "A": out += days[weekday]
            case "b", "h": out += String(months[month - 1].prefix(3))
            case "B": out += months[month - 1]
            case "d": out += pad(day)
            case "e": out += day < 10 ? " \(day)" : "\(day)"
            case "H": out += pad(hour)
            case "I": out += pad(hour % 12 == 0 ? 12 : hour % 12)
            case "j": out += pad(dayOfYear, 3)
            case "m": out += pad(month)
            case "M": out += pad(minute)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "S": out += pad(second)
            case "y": out += pad(year % 100)
            case "Y": out += String(year)
            case "%": out += "%"
            default: throw .render("strftime_now: unsupported directive '%\(d)'", line: line)
            }
        }
        return out
    }
}

private extension UInt {
    /// The value as an Int, Int.max when it does not fit (`Int.min.magnitude`).
    var clampedToInt: Int { self > UInt(Int.max) ? .max : Int(self) }
}
