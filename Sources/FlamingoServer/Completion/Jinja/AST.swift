// The parsed template. Every node that can fail at render time keeps its line.

struct JinjaExpr: Sendable {
    indirect enum Kind: Sendable {
        case none, bool(Bool), int(Int), double(Double), string(String)
        case name(String)
        case list([JinjaExpr])
        case tuple([JinjaExpr])
        case dict([(key: JinjaExpr, value: JinjaExpr)])
        /// `a.b`
        case attribute(JinjaExpr, String)
        /// `a[b]`
        case item(JinjaExpr, JinjaExpr)
        /// `a[start:stop:step]`
        case slice(JinjaExpr, start: JinjaExpr?, stop: JinjaExpr?, step: JinjaExpr?)
        case call(JinjaExpr, args: [JinjaExpr], kwargs: [(name: String, value: JinjaExpr)])
        /// `value | name(args)`; value nil for the filters of a `{% set x | f %}` block.
        case filter(JinjaExpr?, name: String, args: [JinjaExpr], kwargs: [(name: String, value: JinjaExpr)])
        /// `value is name(args)` (`is not` wraps it in `.not`).
        case test(JinjaExpr, name: String, args: [JinjaExpr])
        case negate(JinjaExpr), plus(JinjaExpr)
        case binary(String, JinjaExpr, JinjaExpr)
        /// `a ~ b ~ c`
        case concat([JinjaExpr])
        /// `a < b <= c`, `a in b`, `a not in b`
        case compare(JinjaExpr, [(op: String, JinjaExpr)])
        case and(JinjaExpr, JinjaExpr), or(JinjaExpr, JinjaExpr), not(JinjaExpr)
        /// `then if test else otherwise` (no else: undefined).
        case conditional(test: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
    }

    let kind: Kind
    let line: Int
    /// Levels of the tree below and including this node (a literal is 1, `a + b` is 2), which the
    /// parser bounds (`JinjaLimits.expressionDepth`) so that evaluating it cannot exhaust the stack.
    let depth: Int

    init(kind: Kind, line: Int) {
        self.kind = kind
        self.line = line
        depth = 1 + kind.children.reduce(0) { max($0, $1.depth) }
    }
}

extension JinjaExpr.Kind {
    /// The expressions directly inside this one.
    var children: [JinjaExpr] {
        switch self {
        case .none, .bool, .int, .double, .string, .name: []
        case .list(let items), .tuple(let items), .concat(let items): items
        case .dict(let pairs): pairs.flatMap { [$0.key, $0.value] }
        case .attribute(let base, _): [base]
        case .item(let base, let key): [base, key]
        case .slice(let base, let start, let stop, let step): [base] + [start, stop, step].compactMap { $0 }
        case .call(let callee, let args, let kwargs): [callee] + args + kwargs.map(\.value)
        case .filter(let value, _, let args, let kwargs): (value.map { [$0] } ?? []) + args + kwargs.map(\.value)
        case .test(let value, _, let args): [value] + args
        case .negate(let e), .plus(let e), .not(let e): [e]
        case .binary(_, let a, let b), .and(let a, let b), .or(let a, let b): [a, b]
        case .compare(let first, let ops): [first] + ops.map(\.1)
        case .conditional(let test, let then, let otherwise): [test, then] + (otherwise.map { [$0] } ?? [])
        }
    }
}

/// What `{% for %}` and `{% set %}` assign to.
enum JinjaTarget: Sendable {
    case name(String)
    case names([String])
    /// `ns.attr` (set only).
    case namespaceAttribute(String, String)
}

indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    case ifChain([(test: JinjaExpr, body: [JinjaNode])], otherwise: [JinjaNode])
    case forLoop(target: JinjaTarget, iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
    case set(JinjaTarget, JinjaExpr, line: Int)
    /// `{% set x %}body{% endset %}`, with optional filters applied to the rendered body.
    case setBlock(JinjaTarget, filters: [JinjaExpr], body: [JinjaNode], line: Int)
    case breakLoop, continueLoop
}
