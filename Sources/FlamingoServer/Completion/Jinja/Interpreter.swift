import Foundation

// Evaluates the AST with Jinja2's runtime semantics (Python's data model, Jinja's default
// `Undefined`, the sandbox's attribute rules). One renderer per render; not shared.
//
// Scopes: the variables passed in form the outer frame; each for-loop iteration gets its own frame
// (a `set` inside a loop body is gone after the iteration, as in Jinja), `if` has none. Namespace
// objects are shared by reference, which is how templates carry state out of loops.

final class JinjaRenderer {
    enum Flow { case normal, breakLoop, continueLoop }

    private var frames: [[String: JinjaValue]]
    private var output = ""
    /// What this render has spent of `JinjaLimits`, and the line of the last expression evaluated
    /// (for errors raised where no line is at hand).
    private var budget = JinjaBudget()
    private var line = 1
    /// Every namespace this render made. A namespace can hold itself (`{% set ns.me = ns %}`) or a
    /// chain of others: clearing them all when the render ends frees such cycles and releases long
    /// chains one link at a time instead of recursively.
    private var namespaces: [JinjaNamespace] = []
    let now: Date
    let timeZone: TimeZone

    init(variables: [(String, JinjaValue)], now: Date, timeZone: TimeZone) {
        var root: [String: JinjaValue] = [:]
        for (k, v) in variables { root[k] = v }
        frames = [root]
        self.now = now
        self.timeZone = timeZone
    }

    func render(_ nodes: [JinjaNode]) throws(ChatTemplateError) -> String {
        defer { for ns in namespaces { ns.attributes = JinjaDict() } }
        _ = try run(nodes)
        return output
    }

    func adopt(_ namespace: JinjaNamespace) { namespaces.append(namespace) }

    /// Charges `n` steps of work (`JinjaLimits.steps`).
    func charge(steps n: Int, line: Int) throws(ChatTemplateError) {
        try budget.charge(steps: n, line: line)
    }

    /// Refuses values (the items of a list, tuple or dict about to be made) nested so deep that the
    /// new container would pass `JinjaLimits.valueDepth`, charging a step per container looked at.
    func checkNesting(_ values: some Sequence<JinjaValue>, line: Int) throws(ChatTemplateError) {
        for v in values where try depth(of: v, line: line) >= JinjaLimits.valueDepth {
            throw .render("a list or dict nested deeper than \(JinjaLimits.valueDepth) levels (a limit of this server)", line: line)
        }
    }

    /// Levels of lists, tuples and dicts in `value` (0 for anything else; namespaces are leaves).
    private func depth(of value: JinjaValue, line: Int) throws(ChatTemplateError) -> Int {
        let children: [JinjaValue]
        switch value {
        case .list(let a), .tuple(let a): children = a
        case .dict(let d): children = d.entries.map(\.value)
        default: return 0
        }
        try budget.charge(steps: 1 + children.count, line: line)
        var deepest = 0
        for c in children { deepest = max(deepest, try depth(of: c, line: line)) }
        return 1 + deepest
    }

    private func append(toOutput text: String) throws(ChatTemplateError) {
        output += text
        try JinjaBudget.check(stringBytes: output.utf8.count, line: line)
    }

    // MARK: - Statements

    private func run(_ nodes: [JinjaNode]) throws(ChatTemplateError) -> Flow {
        for node in nodes {
            switch node {
            case .text(let text):
                try append(toOutput: text)
            case .output(let expr):
                try append(toOutput: try eval(expr).pythonString)
            case .ifChain(let branches, let otherwise):
                var taken = false
                for (test, body) in branches where try eval(test).truthy {
                    taken = true
                    let flow = try run(body)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try run(otherwise)
                    if flow != .normal { return flow }
                }
            case .forLoop(let target, let iterable, let filter, let body, let otherwise, let line):
                let flow = try runFor(target: target, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: line)
                if flow != .normal { return flow }
            case .set(let target, let expr, let line):
                try bind(target, try eval(expr), line: line)
            case .setBlock(let target, let filters, let body, let line):
                let saved = output
                output = ""
                _ = try run(body)
                var value = JinjaValue.string(output)
                output = saved
                try budget.charge(made: value, line: line)
                for f in filters { value = try applyFilter(f, to: value) }
                try bind(target, value, line: line)
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    private func runFor(target: JinjaTarget, iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode],
                        otherwise: [JinjaNode], line: Int) throws(ChatTemplateError) -> Flow {
        var items = try iterate(try eval(iterable), line: iterable.line)
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                try budget.charge(steps: 1, line: line)
                frames.append([:])
                defer { frames.removeLast() }
                try bind(target, item, line: line)
                if try eval(filter).truthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            // The else block has the loop's scope too: what it sets is gone after the loop.
            frames.append([:])
            defer { frames.removeLast() }
            return try run(otherwise)
        }
        for (index, item) in items.enumerated() {
            try budget.charge(steps: 1, line: line)
            frames.append(["loop": .loop(LoopState(index0: index, items: items, depth0: 0))])
            defer { frames.removeLast() }
            try bind(target, item, line: line)
            if try run(body) == .breakLoop { break }
        }
        return .normal
    }

    /// Binds a loop or set target in the innermost frame.
    private func bind(_ target: JinjaTarget, _ value: JinjaValue, line: Int) throws(ChatTemplateError) {
        switch target {
        case .name(let n):
            frames[frames.count - 1][n] = value
        case .names(let names):
            let items = try iterate(value, line: line)
            guard items.count == names.count else {
                throw .render(items.count > names.count ? "too many values to unpack (expected \(names.count))"
                                                        : "not enough values to unpack (expected \(names.count), got \(items.count))", line: line)
            }
            for (n, v) in zip(names, items) { frames[frames.count - 1][n] = v }
        case .namespaceAttribute(let n, let attr):
            guard case .namespace(let ns) = lookup(n) else {
                throw .render("cannot assign attribute on non-namespace object", line: line)
            }
            guard !attr.hasPrefix("_") else {
                throw .render("chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(attr)'", line: line)
            }
            ns.attributes[attr] = value
        }
    }

    // MARK: - Names and iteration

    private func lookup(_ name: String) -> JinjaValue {
        for frame in frames.reversed() {
            if let v = frame[name] { return v }
        }
        if JinjaBuiltins.functions.contains(name) { return .function(name) }
        return .undefined(.name(name))
    }

    /// What a `for` loop (or `list()`) goes through: list and tuple items, dict keys, a string's
    /// characters; nothing for undefined.
    func iterate(_ value: JinjaValue, line: Int) throws(ChatTemplateError) -> [JinjaValue] {
        switch value {
        case .undefined: return []
        case .list(let a), .tuple(let a): return a
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s):
            try JinjaBudget.check(listItems: s.unicodeScalars.count, line: line)
            return s.unicodeScalars.map { .string(String($0)) }
        case .loop(let s): return s.items
        default: throw .render("'\(value.typeName)' object is not iterable", line: line)
        }
    }

    // MARK: - Expressions

    func eval(_ expr: JinjaExpr) throws(ChatTemplateError) -> JinjaValue {
        let line = expr.line
        self.line = line
        try budget.charge(steps: 1, line: line)
        let value = try evalUncharged(expr)
        switch expr.kind {
        case .binary, .concat, .call, .filter: try budget.charge(made: value, line: line)
        default: break
        }
        return value
    }

    /// What a comparison or test costs beyond one step: the items or bytes it may go through.
    private func charge(comparing values: JinjaValue..., line: Int) throws(ChatTemplateError) {
        var n = 0
        for v in values {
            switch v {
            case .string(let s): n += s.utf8.count >> 6
            case .list(let a), .tuple(let a): n += a.count
            case .dict(let d): n += d.count
            default: break
            }
        }
        try budget.charge(steps: n, line: line)
    }

    private func evalUncharged(_ expr: JinjaExpr) throws(ChatTemplateError) -> JinjaValue {
        let line = expr.line
        switch expr.kind {
        case .none: return .none
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .string(let s): return .string(s)
        case .name(let n): return lookup(n)
        case .list(let items):
            var values: [JinjaValue] = []
            for item in items { values.append(try eval(item)) }
            try checkNesting(values, line: line)
            return .list(values)
        case .tuple(let items):
            var values: [JinjaValue] = []
            for item in items { values.append(try eval(item)) }
            try checkNesting(values, line: line)
            return .tuple(values)
        case .dict(let pairs):
            var d = JinjaDict()
            for (k, v) in pairs {
                guard case .string(let key) = try eval(k) else { throw .render("dict literal keys must be strings here", line: k.line) }
                d[key] = try eval(v)
            }
            try checkNesting(d.entries.map(\.value), line: line)
            return .dict(d)
        case .attribute(let base, let name):
            return try attribute(try eval(base), name, line: line)
        case .item(let base, let key):
            return try item(try eval(base), try eval(key), line: line)
        case .slice(let base, let start, let stop, let step):
            return try slice(try eval(base), start: start.map { e throws(ChatTemplateError) in try eval(e) },
                             stop: stop.map { e throws(ChatTemplateError) in try eval(e) },
                             step: step.map { e throws(ChatTemplateError) in try eval(e) }, line: line)
        case .call(let callee, let argExprs, let kwargExprs):
            var args: [JinjaValue] = []
            for a in argExprs { args.append(try eval(a)) }
            var kwargs: [(String, JinjaValue)] = []
            for (k, v) in kwargExprs { kwargs.append((k, try eval(v))) }
            let target = try eval(callee)
            switch target {
            case .function(let name):
                return try JinjaBuiltins.callFunction(name, args, kwargs, renderer: self, line: line)
            case .method(let receiver, let name):
                return try JinjaBuiltins.callMethod(name, on: receiver, args, kwargs, line: line)
            case .undefined(let hint):
                throw .render(hint.message, line: line)
            default:
                throw .render("'\(target.typeName)' object is not callable", line: line)
            }
        case .filter:
            return try applyFilter(expr, to: nil)
        case .test(let valueExpr, let name, let argExprs):
            let value = try eval(valueExpr)
            var args: [JinjaValue] = []
            for a in argExprs { args.append(try eval(a)) }
            try charge(comparing: value, args.first ?? .none, line: line)
            return .bool(try JinjaBuiltins.test(name, value, args, renderer: self, line: line))
        case .negate(let e):
            switch try eval(e) {
            case .int(let i): return .int(-i)
            case .bool(let b): return .int(b ? -1 : 0)
            case .double(let d): return .double(-d)
            case .undefined(let h): throw .render(h.message, line: line)
            case let v: throw .render("bad operand type for unary -: '\(v.typeName)'", line: line)
            }
        case .plus(let e):
            switch try eval(e) {
            case .int(let i): return .int(i)
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .double(d)
            case .undefined(let h): throw .render(h.message, line: line)
            case let v: throw .render("bad operand type for unary +: '\(v.typeName)'", line: line)
            }
        case .binary(let op, let a, let b):
            return try JinjaOps.binary(op, try eval(a), try eval(b), line: line)
        case .concat(let parts):
            var s = ""
            for p in parts {
                s += try eval(p).pythonString
                try JinjaBudget.check(stringBytes: s.utf8.count, line: line)
            }
            return .string(s)
        case .compare(let first, let ops):
            var left = try eval(first)
            for (op, rightExpr) in ops {
                let right = try eval(rightExpr)
                try charge(comparing: left, right, line: line)
                guard try JinjaOps.compare(op, left, right, line: line) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .and(let a, let b):
            let left = try eval(a)
            return left.truthy ? try eval(b) : left
        case .or(let a, let b):
            let left = try eval(a)
            return left.truthy ? left : try eval(b)
        case .not(let e):
            return .bool(!(try eval(e).truthy))
        case .conditional(let test, let then, let otherwise):
            if try eval(test).truthy { return try eval(then) }
            if let otherwise { return try eval(otherwise) }
            return .undefined("the inline if-expression evaluated to false and no else section was defined")
        }
    }

    /// Evaluates a `.filter` node; `input` replaces the node's value (set-block filters have none).
    private func applyFilter(_ expr: JinjaExpr, to input: JinjaValue?) throws(ChatTemplateError) -> JinjaValue {
        guard case .filter(let valueExpr, let name, let argExprs, let kwargExprs) = expr.kind else {
            preconditionFailure("applyFilter on a non-filter node")
        }
        let value: JinjaValue
        if let input { value = input } else if let valueExpr { value = try eval(valueExpr) } else { value = .undefined("no value") }
        var args: [JinjaValue] = []
        for a in argExprs { args.append(try eval(a)) }
        var kwargs: [(String, JinjaValue)] = []
        for (k, v) in kwargExprs { kwargs.append((k, try eval(v))) }
        return try JinjaBuiltins.filter(name, value, args, kwargs, renderer: self, line: expr.line)
    }

    // MARK: - Attribute and item access (Jinja's environment.getattr / getitem, sandboxed)

    func attribute(_ value: JinjaValue, _ name: String, line: Int) throws(ChatTemplateError) -> JinjaValue {
        if case .undefined(let h) = value { throw .render(h.message, line: line) }
        // The sandbox hides private and dunder attributes.
        if name.hasPrefix("_") { return .undefined("access to attribute '\(name)' of '\(value.typeName)' object is unsafe") }
        switch value {
        case .dict(let d):
            if JinjaBuiltins.dictMethods.contains(name) { return .method(value, name) }
            return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined("'Namespace object' has no attribute '\(name)'")
        case .loop(let s):
            return s.attribute(name)
        case .string:
            if JinjaBuiltins.stringMethods.contains(name) { return .method(value, name) }
        default:
            break
        }
        return .undefined("'\(value.typeName) object' has no attribute '\(name)'")
    }

    func item(_ value: JinjaValue, _ key: JinjaValue, line: Int) throws(ChatTemplateError) -> JinjaValue {
        if case .undefined(let h) = value { throw .render(h.message, line: line) }
        switch (value, key) {
        case (.dict(let d), .string(let k)):
            return d[k] ?? .undefined("'dict object' has no attribute '\(k)'")
        case (.list(let a), _), (.tuple(let a), _):
            if let i = Self.index(key) {
                let j = i < 0 ? i + a.count : i
                return a.indices.contains(j) ? a[j] : .undefined("\(value.typeName) object has no element \(i)")
            }
        case (.string(let s), _):
            if let i = Self.index(key) {
                let scalars = Array(s.unicodeScalars)
                let j = i < 0 ? i + scalars.count : i
                return scalars.indices.contains(j) ? .string(String(scalars[j])) : .undefined("str object has no element \(i)")
            }
        default:
            break
        }
        // Jinja falls back to the attribute for string keys (`ns['x']`, `loop['index']`).
        if case .string(let k) = key { return try attribute(value, k, line: line) }
        return .undefined("'\(value.typeName) object' has no attribute \(key.pythonRepr)")
    }

    private static func index(_ key: JinjaValue) -> Int? {
        switch key {
        case .int(let i): i
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    private func slice(_ value: JinjaValue, start: JinjaValue?, stop: JinjaValue?, step: JinjaValue?, line: Int) throws(ChatTemplateError) -> JinjaValue {
        if case .undefined(let h) = value { throw .render(h.message, line: line) }
        func bound(_ v: JinjaValue?) throws(ChatTemplateError) -> Int? {
            switch v {
            case nil, .none?: return nil
            case let v?:
                guard let i = Self.index(v) else { throw .render("slice indices must be integers or None", line: line) }
                return i
            }
        }
        let stepValue = try bound(step) ?? 1
        guard stepValue != 0 else { throw .render("slice step cannot be zero", line: line) }
        func indices(count: Int) throws(ChatTemplateError) -> [Int] {
            // Python's slice.indices.
            func clamp(_ v: Int?, _ defaultValue: Int) -> Int {
                guard var v else { return defaultValue }
                if v < 0 { v += count }
                if stepValue > 0 { return min(max(v, 0), count) }
                return min(max(v, -1), count - 1)
            }
            let lo = clamp(try bound(start), stepValue > 0 ? 0 : count - 1)
            let hi = clamp(try bound(stop), stepValue > 0 ? count : -1)
            return Array(stride(from: lo, to: hi, by: stepValue))
        }
        switch value {
        case .list(let a): return .list(try indices(count: a.count).map { a[$0] })
        case .tuple(let a): return .tuple(try indices(count: a.count).map { a[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            return .string(PythonString.string(try indices(count: scalars.count).map { scalars[$0] }))
        default:
            return .undefined("'\(value.typeName)' object is not subscriptable")
        }
    }
}

// MARK: - Operators

enum JinjaOps {
    private enum Number { case int(Int), double(Double) }

    private static func number(_ v: JinjaValue) -> Number? {
        switch v {
        case .int(let i): .int(i)
        case .bool(let b): .int(b ? 1 : 0)
        case .double(let d): .double(d)
        default: nil
        }
    }

    private static func double(_ n: Number) -> Double {
        switch n {
        case .int(let i): Double(i)
        case .double(let d): d
        }
    }

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, line: Int) throws(ChatTemplateError) -> JinjaValue {
        if case .undefined(let h) = a { throw .render(h.message, line: line) }
        if case .undefined(let h) = b { throw .render(h.message, line: line) }
        let unsupported = ChatTemplateError.render("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'", line: line)
        if let x = number(a), let y = number(b) {
            switch (x, y) {
            case (.int(let i), .int(let j)):
                func checked(_ r: (Int, Bool)) throws(ChatTemplateError) -> JinjaValue {
                    guard !r.1 else { throw .render("integer overflow", line: line) }
                    return .int(r.0)
                }
                switch op {
                case "+": return try checked(i.addingReportingOverflow(j))
                case "-": return try checked(i.subtractingReportingOverflow(j))
                case "*": return try checked(i.multipliedReportingOverflow(by: j))
                case "/":
                    guard j != 0 else { throw .render("division by zero", line: line) }
                    return .double(Double(i) / Double(j))
                case "//":
                    guard j != 0 else { throw .render("integer division or modulo by zero", line: line) }
                    let q = i / j
                    return .int((i % j != 0 && (i < 0) != (j < 0)) ? q - 1 : q)
                case "%":
                    guard j != 0 else { throw .render("integer division or modulo by zero", line: line) }
                    let r = i % j
                    return .int(r != 0 && (r < 0) != (j < 0) ? r + j : r)
                case "**":
                    if j < 0 { return .double(pow(Double(i), Double(j))) }
                    var result = 1, base = i, e = j
                    while e > 0 {
                        if e & 1 == 1 { result = try checkedInt(result.multipliedReportingOverflow(by: base), line: line) }
                        e >>= 1
                        if e > 0 { base = try checkedInt(base.multipliedReportingOverflow(by: base), line: line) }
                    }
                    return .int(result)
                default: throw unsupported
                }
            default:
                let p = double(x), q = double(y)
                switch op {
                case "+": return .double(p + q)
                case "-": return .double(p - q)
                case "*": return .double(p * q)
                case "/":
                    guard q != 0 else { throw .render("float division by zero", line: line) }
                    return .double(p / q)
                case "//":
                    guard q != 0 else { throw .render("float floor division by zero", line: line) }
                    return .double((p / q).rounded(.down))
                case "%":
                    guard q != 0 else { throw .render("float modulo", line: line) }
                    let r = fmod(p, q)
                    return .double(r != 0 && (r < 0) != (q < 0) ? r + q : r)
                case "**": return .double(pow(p, q))
                default: throw unsupported
                }
            }
        }
        // Sizes are checked before the result is made.
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)):
            try JinjaBudget.check(stringBytes: x.utf8.count + y.utf8.count, line: line)
            return .string(x + y)
        case ("+", .list(let x), .list(let y)):
            try JinjaBudget.check(listItems: x.count + y.count, line: line)
            return .list(x + y)
        case ("+", .tuple(let x), .tuple(let y)):
            try JinjaBudget.check(listItems: x.count + y.count, line: line)
            return .tuple(x + y)
        case ("*", .string(let s), _), ("*", _, .string(let s)):
            guard let n = number(a.isStringValue ? b : a), case .int(let k) = n else { throw unsupported }
            try JinjaBudget.check(stringBytes: JinjaBudget.product(s.utf8.count, max(0, k)) ?? .max, line: line)
            return .string(String(repeating: s, count: max(0, k)))
        case ("*", .list(let l), _), ("*", _, .list(let l)):
            guard let n = number(a.sequenceItems != nil ? b : a), case .int(let k) = n else { throw unsupported }
            try JinjaBudget.check(listItems: JinjaBudget.product(l.count, max(0, k)) ?? .max, line: line)
            return .list(Array([[JinjaValue]](repeating: l, count: max(0, k)).joined()))
        case ("%", .string, _):
            throw .render("printf-style string formatting ('...' % values) is not supported", line: line)
        case ("+", .string, _):
            throw .render("can only concatenate str (not \"\(b.typeName)\") to str", line: line)
        default:
            throw unsupported
        }
    }

    private static func checkedInt(_ r: (Int, Bool), line: Int) throws(ChatTemplateError) -> Int {
        guard !r.1 else { throw .render("integer overflow", line: line) }
        return r.0
    }

    /// Python's `==`.
    static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return PythonString.equal(x, y)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.dict(let x), .dict(let y)):
            return x.count == y.count && x.entries.allSatisfy { e in y[e.key].map { equal(e.value, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.function(let x), .function(let y)): return x == y
        default:
            if let x = number(a), let y = number(b) {
                switch (x, y) {
                case (.int(let i), .int(let j)): return i == j
                default: return double(x) == double(y)
                }
            }
            return false
        }
    }

    /// Python's `<` (numbers, strings, lists and tuples).
    static func less(_ a: JinjaValue, _ b: JinjaValue, op: String, line: Int) throws(ChatTemplateError) -> Bool {
        if let x = number(a), let y = number(b) {
            if case .int(let i) = x, case .int(let j) = y { return i < j }
            return double(x) < double(y)
        }
        switch (a, b) {
        case (.string(let x), .string(let y)): return PythonString.less(x, y)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return try less(p, q, op: op, line: line) }
            return x.count < y.count
        case (.undefined(let h), _), (_, .undefined(let h)):
            throw .render(h.message, line: line)
        default:
            throw .render("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'", line: line)
        }
    }

    static func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue, line: Int) throws(ChatTemplateError) -> Bool {
        switch op {
        case "==": return equal(a, b)
        case "!=": return !equal(a, b)
        case "<": return try less(a, b, op: op, line: line)
        case ">": return try less(b, a, op: op, line: line)
        case "<=": return try !less(b, a, op: op, line: line)
        case ">=": return try !less(a, b, op: op, line: line)
        case "in": return try contains(b, a, line: line)
        case "not in": return try !contains(b, a, line: line)
        default: throw .render("unknown comparison '\(op)'", line: line)
        }
    }

    /// Python's `item in container`.
    static func contains(_ container: JinjaValue, _ item: JinjaValue, line: Int) throws(ChatTemplateError) -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let needle) = item else {
                throw .render("'in <string>' requires string as left operand, not \(item.typeName)", line: line)
            }
            return PythonString.contains(s, needle)
        case .list(let a), .tuple(let a): return a.contains { equal($0, item) }
        case .dict(let d):
            if case .string(let k) = item { return d[k] != nil }
            return false
        case .undefined: return false
        default: throw .render("argument of type '\(container.typeName)' is not iterable", line: line)
        }
    }
}

extension JinjaValue {
    var isStringValue: Bool {
        if case .string = self { return true }
        return false
    }
}
