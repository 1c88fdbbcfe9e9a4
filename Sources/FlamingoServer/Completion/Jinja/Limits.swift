// Bounds on loading and rendering one template, so that no template (a model's own, or one given
// with --chat-template) and no conversation can hang a server thread, overflow its stack or exhaust
// its memory. Python's Jinja2 has none of these (a template there can loop for ever or build a
// string of any size); each bound here is far above what real chat templates need: rendering a
// 100-message conversation (50 turns with an image each) takes 3,403 steps with IDEFICS2-8B's
// template, 6,498 with Llama-3.2-11B-Vision-Instruct's and 4,653 with the built-in IDEFICS style.

enum JinjaLimits {
    /// Blocks (`if`, `for`, `set`...`endset`) nested inside one another.
    static let blockNesting = 64
    /// Levels of one expression's tree (`a + b + c` is 3) and of the parser's recursion.
    static let expressionDepth = 256
    /// Nesting of a list, tuple or dict a template builds (JSON input is bounded at 512 too).
    static let valueDepth = 512
    /// Work in one render: each node and expression evaluated, each loop iteration, and each item
    /// an operator or filter goes through (comparing, searching, selecting).
    static let steps = 2_000_000
    /// UTF-8 bytes of any one string, the rendered prompt included: twice the server's largest
    /// request body, so every request it accepts renders.
    static let stringBytes = 64 << 20
    /// Items of any one list.
    static let listItems = 1 << 22
    /// Bytes of strings and lists made in one render (a template that keeps appending to a
    /// growing string copies it each time).
    static let bytesMade = 1 << 30
}

/// What one render has spent of `JinjaLimits`.
struct JinjaBudget {
    private(set) var steps = 0
    private(set) var bytesMade = 0

    mutating func charge(steps n: Int, line: Int) throws(ChatTemplateError) {
        steps += n
        guard steps <= JinjaLimits.steps else {
            throw .render("the template took more than \(JinjaLimits.steps) steps for this conversation (a limit of this server)", line: line)
        }
    }

    /// Charges a value just made: its bytes if it is a string or a list, and checks its size.
    mutating func charge(made value: JinjaValue, line: Int) throws(ChatTemplateError) {
        switch value {
        case .string(let s):
            try JinjaBudget.check(stringBytes: s.utf8.count, line: line)
            bytesMade += s.utf8.count
        case .list(let a), .tuple(let a):
            try JinjaBudget.check(listItems: a.count, line: line)
            bytesMade += a.count * MemoryLayout<JinjaValue>.stride
        default:
            return
        }
        guard bytesMade <= JinjaLimits.bytesMade else {
            throw .render("the template made more than \(JinjaLimits.bytesMade >> 30) GiB of strings and lists for this conversation (a limit of this server)", line: line)
        }
    }

    static func check(stringBytes n: Int, line: Int) throws(ChatTemplateError) {
        guard n <= JinjaLimits.stringBytes else {
            throw .render("a string of more than \(JinjaLimits.stringBytes >> 20) MiB (a limit of this server)", line: line)
        }
    }

    static func check(listItems n: Int, line: Int) throws(ChatTemplateError) {
        guard n <= JinjaLimits.listItems else {
            throw .render("a list of more than \(JinjaLimits.listItems) items (a limit of this server)", line: line)
        }
    }

    /// The product `a * b` of two sizes, or nil when it would overflow.
    static func product(_ a: Int, _ b: Int) -> Int? {
        let (p, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : p
    }
}
