import FlamingoCore
import Foundation

/// Why a chat template cannot be loaded or rendered. Load-time errors (`syntax`, `unsupported`) name
/// the line; a template that loads renders every construct it contains.
public enum ChatTemplateError: Error, LocalizedError, Equatable, Sendable {
    case syntax(String, line: Int)
    /// A Jinja construct outside the supported subset, e.g. "tag 'macro'" or "filter 'wordwrap'".
    case unsupported(String, line: Int)
    /// The template called `raise_exception(message)` (it refuses these messages).
    case raised(String)
    /// A Python-level error while rendering (an undefined value used, a type error, ...).
    case render(String, line: Int)

    public var errorDescription: String? {
        switch self {
        case .syntax(let m, let line): "chat_template: syntax error at line \(line): \(m)"
        case .unsupported(let what, let line): "chat_template: unsupported \(what) at line \(line)"
        case .raised(let m): "chat_template: raise_exception: \(m)"
        case .render(let m, let line): "chat_template: error at line \(line): \(m)"
        }
    }
}

/// A Jinja2 template in the subset real chat templates use, rendered the way transformers renders
/// `chat_template` (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` plus the
/// globals `raise_exception`, `namespace`, `strftime_now`, `dict`, and transformers' `tojson`).
///
/// Supported: `{{ }}`, `{% %}`, `{# #}` with whitespace control (`-`, `+`); `if`/`elif`/`else`,
/// `for` (with `else`, a filter `if`, tuple targets, `break`/`continue`, `loop.index`, `index0`,
/// `revindex`, `revindex0`, `first`, `last`, `length`, `previtem`, `nextitem`), `set` (also
/// `ns.attr` and block form), `print`, transformers' `generation`; literals (strings, numbers, lists,
/// tuples, dicts); `+ - * / // % **`, `~`, comparisons, `in`, `not in`, `and`/`or`/`not`,
/// `x if c else y`; attribute, subscript and slice access; the filters, tests, functions and
/// methods listed in `JinjaBuiltins`. Anything else fails at load with the construct and line.
public struct JinjaTemplate: Sendable {
    let nodes: [JinjaNode]

    /// Parses `source`.
    /// - Throws: `ChatTemplateError.syntax` or `.unsupported`, with the line.
    public init(_ source: String) throws(ChatTemplateError) {
        nodes = try JinjaParser.parse(source)
    }

    /// Renders with `context` (a JSON object's members as variables, as `json.loads` would give
    /// them). `now`, in `timeZone`, is what `strftime_now` formats.
    public func render(_ context: [(key: String, value: JSON)], now: Date = Date(), timeZone: TimeZone = .current) throws(ChatTemplateError) -> String {
        try render(variables: context.map { ($0.key, JinjaValue(json: $0.value)) }, now: now, timeZone: timeZone)
    }

    func render(variables: [(String, JinjaValue)], now: Date, timeZone: TimeZone) throws(ChatTemplateError) -> String {
        let renderer = JinjaRenderer(variables: variables, now: now, timeZone: timeZone)
        return try renderer.render(nodes)
    }
}
