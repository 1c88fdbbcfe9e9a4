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

    var kind: Kind
    var line: Int
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
