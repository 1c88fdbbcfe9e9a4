// Builds the AST with Jinja2's grammar and precedence (jinja2/parser.py, 3.1). Constructs outside the
// supported subset fail here, at load time, naming the construct and its line: a template either
// loads completely or not at all.

struct JinjaParser {
    private var tokens: [JinjaToken]
    private var i = 0
    private var loopDepth = 0
    /// Blocks open around the current token, and the parser's expression recursion.
    private var blockNesting = 0
    private var expressionNesting = 0

    static func parse(_ template: String) throws(ChatTemplateError) -> [JinjaNode] {
        var parser = JinjaParser(tokens: try JinjaLexer.tokenize(template))
        let nodes = try parser.subparse(until: [])
        guard case .end = parser.current.kind else { throw parser.unexpected() }
        return nodes
    }

    private init(tokens: [JinjaToken]) {
        var tokens = tokens
        tokens.append(JinjaToken(kind: .end, line: tokens.last?.line ?? 1))
        self.tokens = tokens
    }

    // MARK: - Token stream

    private var current: JinjaToken { tokens[i] }
    private var nextToken: JinjaToken { tokens[min(i + 1, tokens.count - 1)] }
    private mutating func advance() { if i < tokens.count - 1 { i += 1 } }

    private func isName(_ name: String, _ token: JinjaToken? = nil) -> Bool {
        if case .name(let n) = (token ?? current).kind { return n == name }
        return false
    }

    private func isOp(_ op: String) -> Bool {
        if case .op(let o) = current.kind { return o == op }
        return false
    }

    private mutating func skip(name: String) -> Bool {
        guard isName(name) else { return false }
        advance()
        return true
    }

    private mutating func skip(op: String) -> Bool {
        guard isOp(op) else { return false }
        advance()
        return true
    }

    private func describe(_ token: JinjaToken) -> String {
        switch token.kind {
        case .text: "template text"
        case .variableBegin: "'{{'"
        case .variableEnd: "'}}'"
        case .blockBegin: "'{%'"
        case .blockEnd: "'%}'"
        case .name(let n): "'\(n)'"
        case .string: "a string"
        case .integer, .float: "a number"
        case .op(let o): "'\(o)'"
        case .end: "the end of the template"
        }
    }

    private func unexpected(expecting: String? = nil) -> ChatTemplateError {
        .syntax("unexpected \(describe(current))" + (expecting.map { ", expected \($0)" } ?? ""), line: current.line)
    }

    private mutating func expect(op: String) throws(ChatTemplateError) {
        guard skip(op: op) else { throw unexpected(expecting: "'\(op)'") }
    }

    private mutating func expectName() throws(ChatTemplateError) -> String {
        guard case .name(let n) = current.kind else { throw unexpected(expecting: "a name") }
        advance()
        return n
    }

    /// A new expression node, refused when its tree is deeper than `JinjaLimits.expressionDepth`
    /// (chains such as `a + b + c + ...` grow the tree without the parser recursing).
    private func node(_ kind: JinjaExpr.Kind, line: Int) throws(ChatTemplateError) -> JinjaExpr {
        let expr = JinjaExpr(kind: kind, line: line)
        guard expr.depth <= JinjaLimits.expressionDepth else { throw Self.tooDeep(line: line) }
        return expr
    }

    private static func tooDeep(line: Int) -> ChatTemplateError {
        .unsupported("expression nested deeper than \(JinjaLimits.expressionDepth) levels", line: line)
    }

    /// Counts one level of the parser's recursion into a subexpression (`(`, `not`, unary `-`);
    /// `leave()` undoes it.
    private mutating func enter() throws(ChatTemplateError) {
        expressionNesting += 1
        guard expressionNesting <= JinjaLimits.expressionDepth else { throw Self.tooDeep(line: current.line) }
    }

    private mutating func leave() { expressionNesting -= 1 }

    private mutating func expectBlockEnd() throws(ChatTemplateError) {
        guard case .blockEnd = current.kind else { throw unexpected(expecting: "'%}'") }
        advance()
    }

    // MARK: - Statements

    /// Nodes up to a `{% name %}` tag with one of `end` names (left unconsumed: the current token is
    /// that name), or the end of the template when `end` is empty.
    private mutating func subparse(until end: Set<String>) throws(ChatTemplateError) -> [JinjaNode] {
        var nodes: [JinjaNode] = []
        while true {
            switch current.kind {
            case .text(let text):
                nodes.append(.text(text))
                advance()
            case .variableBegin:
                advance()
                let expr = try parseTuple()
                guard case .variableEnd = current.kind else { throw unexpected(expecting: "'}}'") }
                advance()
                nodes.append(.output(expr))
            case .blockBegin:
                let tagLine = current.line
                advance()
                if case .name(let n) = current.kind, end.contains(n) { return nodes }
                nodes += try statement(line: tagLine)
            case .end:
                if !end.isEmpty {
                    throw .syntax("unexpected end of template, expected \(end.sorted().map { "'\($0)'" }.joined(separator: " or "))", line: current.line)
                }
                return nodes
            default:
                throw unexpected()
            }
        }
    }

    /// The body of a block tag (after its header's `%}`) up to one of `end`; `drop`: also consume
    /// that closing tag.
    private mutating func body(until end: Set<String>, drop: Bool) throws(ChatTemplateError) -> (nodes: [JinjaNode], closer: String) {
        try expectBlockEnd()
        blockNesting += 1
        defer { blockNesting -= 1 }
        guard blockNesting <= JinjaLimits.blockNesting else {
            throw .unsupported("blocks nested deeper than \(JinjaLimits.blockNesting) levels", line: current.line)
        }
        let nodes = try subparse(until: end)
        let closer = try expectName()
        if drop { try expectBlockEnd() }
        return (nodes, closer)
    }

    /// Tags Jinja has that this subset does not.
    private static let unsupportedTags: Set<String> = [
        "macro", "call", "filter", "block", "extends", "include", "import", "from", "with", "autoescape", "raw",
        "trans", "do",
    ]

    private mutating func statement(line: Int) throws(ChatTemplateError) -> [JinjaNode] {
        guard case .name(let tag) = current.kind else { throw .syntax("tag name expected", line: current.line) }
        switch tag {
        case "if": return [try parseIf()]
        case "for": return [try parseFor()]
        case "set": return [try parseSet()]
        case "print":
            advance()
            let expr = try parseTuple()
            try expectBlockEnd()
            return [.output(expr)]
        case "generation":
            // transformers' AssistantTracker tag: marks the assistant's text; renders its body.
            advance()
            let (nodes, _) = try body(until: ["endgeneration"], drop: true)
            return nodes
        case "break", "continue":
            guard loopDepth > 0 else { throw .syntax("'\(tag)' outside of a for loop", line: current.line) }
            advance()
            try expectBlockEnd()
            return [tag == "break" ? .breakLoop : .continueLoop]
        default:
            if Self.unsupportedTags.contains(tag) { throw .unsupported("tag '\(tag)'", line: current.line) }
            if tag.hasPrefix("end") || ["elif", "else"].contains(tag) {
                throw .syntax("unexpected '\(tag)'", line: current.line)
            }
            throw .unsupported("tag '\(tag)'", line: current.line)
        }
    }

    private mutating func parseIf() throws(ChatTemplateError) -> JinjaNode {
        advance()
        var branches: [(test: JinjaExpr, body: [JinjaNode])] = []
        var otherwise: [JinjaNode] = []
        while true {
            let test = try parseTuple(conditional: false)
            let (nodes, closer) = try body(until: ["elif", "else", "endif"], drop: false)
            branches.append((test, nodes))
            if closer == "elif" { continue }
            if closer == "else" { otherwise = try body(until: ["endif"], drop: true).nodes } else { try expectBlockEnd() }
            break
        }
        return .ifChain(branches, otherwise: otherwise)
    }

    private mutating func parseFor() throws(ChatTemplateError) -> JinjaNode {
        let line = current.line
        advance()
        let target = try parseAssignTarget(namespace: false, endsAt: "in")
        guard skip(name: "in") else { throw unexpected(expecting: "'in'") }
        let iterable = try parseTuple(conditional: false, endsAt: "recursive")
        let filter: JinjaExpr? = skip(name: "if") ? try parseExpression() : nil
        if isName("recursive") { throw .unsupported("recursive loop", line: current.line) }
        loopDepth += 1
        let (body, closer) = try body(until: ["endfor", "else"], drop: false)
        loopDepth -= 1
        var otherwise: [JinjaNode] = []
        if closer == "else" { otherwise = try self.body(until: ["endfor"], drop: true).nodes } else { try expectBlockEnd() }
        return .forLoop(target: target, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: line)
    }

    private mutating func parseSet() throws(ChatTemplateError) -> JinjaNode {
        let line = current.line
        advance()
        let target = try parseAssignTarget(namespace: true, endsAt: nil)
        if skip(op: "=") {
            let value = try parseTuple()
            try expectBlockEnd()
            return .set(target, value, line: line)
        }
        var filters: [JinjaExpr] = []
        while isOp("|") { filters.append(try parseFilter(nil)) }
        let (body, _) = try body(until: ["endset"], drop: true)
        return .setBlock(target, filters: filters, body: body, line: line)
    }

    /// A name, `ns.attr` (set only) or names separated by commas.
    private mutating func parseAssignTarget(namespace: Bool, endsAt: String?) throws(ChatTemplateError) -> JinjaTarget {
        let parenthesized = skip(op: "(")
        var names: [String] = []
        var isTuple = parenthesized
        while true {
            let name = try expectName()
            if namespace, names.isEmpty, skip(op: ".") {
                let attr = try expectName()
                return .namespaceAttribute(name, attr)
            }
            names.append(name)
            guard skip(op: ",") else { break }
            isTuple = true
            if (endsAt.map { isName($0) } ?? false) || isOp(")") || isOp("=") { break }
        }
        if parenthesized { try expect(op: ")") }
        for name in names where ["true", "false", "none", "True", "False", "None"].contains(name) {
            throw .syntax("cannot assign to '\(name)'", line: current.line)
        }
        return isTuple ? .names(names) : .name(names[0])
    }

    // MARK: - Expressions

    private func isTupleEnd(_ endsAt: String?) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .end: return true
        case .op(")"): return true
        case .name(let n): return n == endsAt
        default: return false
        }
    }

    /// Expressions separated by commas make a tuple (`{{ a, b }}`, `{% set x = 1, 2 %}`).
    private mutating func parseTuple(conditional: Bool = true, endsAt: String? = nil, parenthesized: Bool = false) throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        var items: [JinjaExpr] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expect(op: ",") }
            if isTupleEnd(endsAt) { break }
            items.append(conditional ? try parseExpression() : try parseOr())
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let first = items.first { return first }
            if !parenthesized { throw unexpected(expecting: "an expression") }
        }
        return try node(.tuple(items), line: line)
    }

    private mutating func parseExpression() throws(ChatTemplateError) -> JinjaExpr {
        try enter()
        defer { leave() }
        var expr = try parseOr()
        while isName("if") {
            let line = current.line
            advance()
            let test = try parseOr()
            let otherwise: JinjaExpr? = skip(name: "else") ? try parseExpression() : nil
            expr = try node(.conditional(test: test, then: expr, otherwise: otherwise), line: line)
        }
        return expr
    }

    private mutating func parseOr() throws(ChatTemplateError) -> JinjaExpr {
        var left = try parseAnd()
        while isName("or") {
            let line = current.line
            advance()
            left = try node(.or(left, try parseAnd()), line: line)
        }
        return left
    }

    private mutating func parseAnd() throws(ChatTemplateError) -> JinjaExpr {
        var left = try parseNot()
        while isName("and") {
            let line = current.line
            advance()
            left = try node(.and(left, try parseNot()), line: line)
        }
        return left
    }

    private mutating func parseNot() throws(ChatTemplateError) -> JinjaExpr {
        if isName("not") {
            let line = current.line
            advance()
            try enter()
            defer { leave() }
            return try node(.not(try parseNot()), line: line)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        let first = try parseMath1()
        var ops: [(op: String, JinjaExpr)] = []
        while true {
            if case .op(let o) = current.kind, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                advance()
                ops.append((o, try parseMath1()))
            } else if isName("in") {
                advance()
                ops.append(("in", try parseMath1()))
            } else if isName("not"), isName("in", nextToken) {
                advance()
                advance()
                ops.append(("not in", try parseMath1()))
            } else {
                break
            }
        }
        if ops.isEmpty { return first }
        return try node(.compare(first, ops), line: line)
    }

    private mutating func parseMath1() throws(ChatTemplateError) -> JinjaExpr {
        var left = try parseConcat()
        while case .op(let o) = current.kind, o == "+" || o == "-" {
            let line = current.line
            advance()
            left = try node(.binary(o, left, try parseConcat()), line: line)
        }
        return left
    }

    private mutating func parseConcat() throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        var parts = [try parseMath2()]
        while skip(op: "~") { parts.append(try parseMath2()) }
        if parts.count == 1 { return parts[0] }
        return try node(.concat(parts), line: line)
    }

    private mutating func parseMath2() throws(ChatTemplateError) -> JinjaExpr {
        var left = try parsePow()
        while case .op(let o) = current.kind, ["*", "/", "//", "%"].contains(o) {
            let line = current.line
            advance()
            left = try node(.binary(o, left, try parsePow()), line: line)
        }
        return left
    }

    private mutating func parsePow() throws(ChatTemplateError) -> JinjaExpr {
        var left = try parseUnary()
        while isOp("**") {
            let line = current.line
            advance()
            left = try node(.binary("**", left, try parseUnary()), line: line)
        }
        return left
    }

    private mutating func parseUnary(filters: Bool = true) throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        var node: JinjaExpr
        try enter()
        defer { leave() }
        if skip(op: "-") {
            node = try self.node(.negate(try parseUnary(filters: false)), line: line)
        } else if skip(op: "+") {
            node = try self.node(.plus(try parseUnary(filters: false)), line: line)
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if filters { node = try parseFilterExpression(node) }
        return node
    }

    private mutating func parsePrimary() throws(ChatTemplateError) -> JinjaExpr {
        let token = current
        switch token.kind {
        case .name(let n):
            advance()
            switch n {
            case "true", "True": return try node(.bool(true), line: token.line)
            case "false", "False": return try node(.bool(false), line: token.line)
            case "none", "None": return try node(.none, line: token.line)
            default: return try node(.name(n), line: token.line)
            }
        case .string(let s):
            advance()
            var text = s
            // Adjacent string literals concatenate ('a' 'b').
            while case .string(let more) = current.kind { text += more; advance() }
            return try node(.string(text), line: token.line)
        case .integer(let v):
            advance()
            return try node(.int(v), line: token.line)
        case .float(let v):
            advance()
            return try node(.double(v), line: token.line)
        case .op("("):
            advance()
            let expr = try parseTuple(parenthesized: true)
            try expect(op: ")")
            return expr
        case .op("["):
            advance()
            var items: [JinjaExpr] = []
            while !isOp("]") {
                if !items.isEmpty { try expect(op: ",") }
                if isOp("]") { break }
                items.append(try parseExpression())
            }
            try expect(op: "]")
            return try node(.list(items), line: token.line)
        case .op("{"):
            advance()
            var pairs: [(key: JinjaExpr, value: JinjaExpr)] = []
            while !isOp("}") {
                if !pairs.isEmpty { try expect(op: ",") }
                if isOp("}") { break }
                let key = try parseExpression()
                try expect(op: ":")
                pairs.append((key, try parseExpression()))
            }
            try expect(op: "}")
            return try node(.dict(pairs), line: token.line)
        default:
            throw unexpected()
        }
    }

    private mutating func parsePostfix(_ start: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
        var node = start
        while true {
            if isOp(".") || isOp("[") {
                node = try parseSubscript(node)
            } else if isOp("(") {
                node = try parseCall(node)
            } else {
                return node
            }
        }
    }

    private mutating func parseFilterExpression(_ start: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
        var node = start
        while true {
            if isOp("|") {
                node = try parseFilter(node)
            } else if isName("is") {
                node = try parseTest(node)
            } else if isOp("(") {
                node = try parseCall(node)
            } else {
                return node
            }
        }
    }

    private mutating func parseSubscript(_ node: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        if skip(op: ".") {
            switch current.kind {
            case .name(let n):
                advance()
                return try self.node(.attribute(node, n), line: line)
            case .integer(let v):
                advance()
                return try self.node(.item(node, try self.node(.int(v), line: line)), line: line)
            default:
                throw unexpected(expecting: "a name or number")
            }
        }
        try expect(op: "[")
        var args: [JinjaExpr] = []
        var slice: (JinjaExpr?, JinjaExpr?, JinjaExpr?)? = nil
        while !isOp("]") {
            if !args.isEmpty || slice != nil { try expect(op: ",") }
            // A subscript is an expression or a slice `a:b:c` (each part optional).
            var start: JinjaExpr? = nil
            if !isOp(":") {
                start = try parseExpression()
                if !isOp(":") { args.append(start!); continue }
            }
            advance()  // the colon
            var stop: JinjaExpr? = nil, step: JinjaExpr? = nil
            if !isOp(":"), !isOp("]"), !isOp(",") { stop = try parseExpression() }
            if skip(op: ":"), !isOp("]"), !isOp(",") { step = try parseExpression() }
            guard args.isEmpty, slice == nil else { throw .unsupported("multi-dimensional subscript", line: line) }
            slice = (start, stop, step)
        }
        try expect(op: "]")
        if let (start, stop, step) = slice {
            guard args.isEmpty else { throw .unsupported("multi-dimensional subscript", line: line) }
            return try self.node(.slice(node, start: start, stop: stop, step: step), line: line)
        }
        guard args.count == 1 else {
            if args.isEmpty { throw .syntax("expected a subscript expression", line: line) }
            throw .unsupported("multi-dimensional subscript", line: line)
        }
        return try self.node(.item(node, args[0]), line: line)
    }

    private mutating func parseCallArguments() throws(ChatTemplateError) -> (args: [JinjaExpr], kwargs: [(name: String, value: JinjaExpr)]) {
        let line = current.line
        try expect(op: "(")
        var args: [JinjaExpr] = []
        var kwargs: [(name: String, value: JinjaExpr)] = []
        var needComma = false
        while !isOp(")") {
            if needComma {
                try expect(op: ",")
                if isOp(")") { break }
            }
            if isOp("*") || isOp("**") { throw .unsupported("'*args' / '**kwargs' in a call", line: current.line) }
            if case .name(let n) = current.kind, case .op("=") = nextToken.kind {
                advance()
                advance()
                kwargs.append((n, try parseExpression()))
            } else {
                guard kwargs.isEmpty else { throw .syntax("positional argument after a keyword argument", line: line) }
                args.append(try parseExpression())
            }
            needComma = true
        }
        try expect(op: ")")
        return (args, kwargs)
    }

    private mutating func parseCall(_ callee: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        switch callee.kind {
        case .name(let n):
            guard JinjaBuiltins.functions.contains(n) else { throw .unsupported("function '\(n)'", line: line) }
        case .attribute(_, let m):
            guard JinjaBuiltins.methods.contains(m) else { throw .unsupported("method '\(m)'", line: line) }
        default:
            throw .unsupported("call of a computed value", line: line)
        }
        let (args, kwargs) = try parseCallArguments()
        return try node(.call(callee, args: args, kwargs: kwargs), line: line)
    }

    private mutating func parseFilter(_ value: JinjaExpr?) throws(ChatTemplateError) -> JinjaExpr {
        try expect(op: "|")
        let line = current.line
        var name = try expectName()
        while skip(op: ".") { name += "." + (try expectName()) }
        guard JinjaBuiltins.filters.contains(name) else { throw .unsupported("filter '\(name)'", line: line) }
        var args: [JinjaExpr] = [], kwargs: [(name: String, value: JinjaExpr)] = []
        if isOp("(") { (args, kwargs) = try parseCallArguments() }
        return try node(.filter(value, name: name, args: args, kwargs: kwargs), line: line)
    }

    private mutating func parseTest(_ value: JinjaExpr) throws(ChatTemplateError) -> JinjaExpr {
        let line = current.line
        advance()  // is
        let negated = skip(name: "not")
        var name = try expectName()
        while skip(op: ".") { name += "." + (try expectName()) }
        guard JinjaBuiltins.tests.contains(name) else { throw .unsupported("test '\(name)'", line: line) }
        var args: [JinjaExpr] = []
        if isOp("(") {
            let (a, kwargs) = try parseCallArguments()
            guard kwargs.isEmpty else { throw .unsupported("keyword arguments to test '\(name)'", line: line) }
            args = a
        } else if !(isName("else") || isName("or") || isName("and")) {
            // One argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
            switch current.kind {
            case .name, .string, .integer, .float, .op("("), .op("["), .op("{"):
                if isName("is") { throw .syntax("tests cannot be chained with 'is'", line: current.line) }
                args = [try parsePostfix(try parsePrimary())]
            default: break
            }
        }
        let test = try node(.test(value, name: name, args: args), line: line)
        if !negated { return test }
        return try node(.not(test), line: line)
    }
}
