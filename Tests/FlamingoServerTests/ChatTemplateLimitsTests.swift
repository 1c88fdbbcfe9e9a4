import FlamingoCore
import FlamingoServer
import Foundation
import Testing

// The bounds a template meets (JinjaLimits): nesting that would exhaust the parser's or the
// renderer's stack is refused at load; work, string and list sizes that would hang a server thread
// or exhaust its memory are refused while rendering, each with a ChatTemplateError that says which
// limit. Python's Jinja2 has none of these, so there is no golden: what is asserted is that each
// input is refused cleanly (not a crash, a hang or gigabytes of memory) and that real templates
// are far inside every bound (the jinja2 goldens in ChatTemplateJinjaTests still pass).

private func load(_ source: String) throws(ChatTemplateError) -> JinjaTemplate { try JinjaTemplate(source) }

private func render(_ source: String) throws(ChatTemplateError) -> String {
    try JinjaTemplate(source).render([], now: Date(timeIntervalSince1970: 0), timeZone: TimeZone(identifier: "UTC")!)
}

/// Expects a load-time refusal whose message mentions `words`.
private func expectUnsupported(_ source: String, _ words: String, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try load(source)
        Issue.record("loaded", sourceLocation: sourceLocation)
    } catch {
        guard case .unsupported(let what, _) = error else { Issue.record("\(error)", sourceLocation: sourceLocation); return }
        #expect(what.contains(words), "\(what)", sourceLocation: sourceLocation)
    }
}

/// Expects a render-time refusal whose message mentions `words`.
private func expectRenderError(_ source: String, _ words: String, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try render(source)
        Issue.record("rendered", sourceLocation: sourceLocation)
    } catch {
        guard case .render(let message, _) = error else { Issue.record("\(error)", sourceLocation: sourceLocation); return }
        #expect(message.contains(words), "\(message)", sourceLocation: sourceLocation)
    }
}

@Test func deepNestingIsRefusedAtLoad() throws {
    // Without a bound each of these recurses once per level in the parser, the evaluator or both.
    expectUnsupported("{{ " + String(repeating: "(", count: 20_000) + "1" + String(repeating: ")", count: 20_000) + " }}", "nested deeper")
    expectUnsupported("{{ " + String(repeating: "not ", count: 20_000) + "x }}", "nested deeper")
    expectUnsupported("{{ " + String(repeating: "-", count: 20_000) + "1 }}", "nested deeper")
    expectUnsupported("{{ 1" + String(repeating: " + 1", count: 20_000) + " }}", "nested deeper")
    expectUnsupported("{{ x" + String(repeating: ".a", count: 20_000) + " }}", "nested deeper")
    expectUnsupported("{{ x" + String(repeating: " | trim", count: 20_000) + " }}", "nested deeper")
    expectUnsupported("{{ " + String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000) + " }}", "nested deeper")
    expectUnsupported(String(repeating: "{% if x %}", count: 5_000) + String(repeating: "{% endif %}", count: 5_000), "blocks nested deeper")
    // Well inside the bounds: 30 levels of parentheses, a 100-term sum, 20 nested blocks.
    #expect(try render("{{ " + String(repeating: "(", count: 30) + "1" + String(repeating: ")", count: 30) + " }}") == "1")
    #expect(try render("{{ 0" + String(repeating: " + 1", count: 100) + " }}") == "100")
    #expect(try render(String(repeating: "{% if true %}", count: 20) + "in" + String(repeating: "{% endif %}", count: 20)) == "in")
}

@Test func endlessWorkIsRefusedWhileRendering() {
    expectRenderError("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps")
    // Comparing long lists over and over costs their length each time.
    expectRenderError("{% set l = range(100000) | list %}{% for i in range(100000) %}{% if l == l %}{% endif %}{% endfor %}", "steps")
    expectRenderError("{% set l = range(100000) | list %}{% for i in range(100000) %}{{ l | select('odd') | length }}{% endfor %}", "steps")
}

@Test func hugeStringsAndListsAreRefusedBeforeTheyAreMade() {
    expectRenderError("{{ 'a' * 1000000000000 }}", "MiB")
    expectRenderError("{{ ([1] * 1000000000000) | length }}", "items")
    expectRenderError("{{ range(1000000000000000000) | length }}", "range too big")
    expectRenderError("{{ range(-9223372036854775807, 9223372036854775807) | length }}", "range too big")
    // Doubling a string: 2^k bytes after k rounds.
    expectRenderError("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}", "MiB")
    expectRenderError("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "MiB")
    expectRenderError("{% set s = 'x' * 1000000 %}{{ s.replace('', s) }}", "MiB")
    expectRenderError("{% set s = 'x' * 1000000 %}{{ s | replace('x', s) }}", "MiB")
    expectRenderError("{% set s = 'x' * 1000000 %}{{ s.join([s] * 100) }}", "MiB")
    expectRenderError("{{ [1] | tojson(indent=100000000000) }}", "MiB")
    // A list repeating one long string: its repr would be terabytes.
    expectRenderError("{% set l = ['x' * 1000000] * 1000000 %}{{ l }}", "MiB")
    // A template that keeps copying a growing string.
    expectRenderError("{% set ns = namespace(s='x' * 30000000) %}{% for i in range(1000) %}{% set ns.t = ns.s ~ i %}{% endfor %}", "GiB")
}

@Test func deeplyNestedValuesAreRefused() throws {
    expectRenderError("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}", "nested deeper")
    expectRenderError("{% set ns = namespace(x={}) %}{% for i in range(100000) %}{% set ns.x = {'a': ns.x} %}{% endfor %}", "nested deeper")
    expectRenderError("{% set ns = namespace(x=none) %}{% for i in range(100000) %}{% set ns.x = dict(a=ns.x) %}{% endfor %}", "nested deeper")
    // Sharing one value twice doubles the work of looking at it, not its depth: refused by steps.
    expectRenderError("{% set ns = namespace(x=[]) %}{% for i in range(64) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}", "steps")
    #expect(try render("{% set ns = namespace(x=[]) %}{% for i in range(100) %}{% set ns.x = [ns.x] %}{% endfor %}{{ (ns.x | string)[:6] }}") == "[[[[[[")
}

@Test func namespacesHoldingThemselvesRenderAndAreFreed() throws {
    // Python prints a namespace that holds itself as <Namespace {...}> inside; a chain of 10^5
    // namespaces is released link by link when the render ends.
    #expect(try render("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}") == "<Namespace {'a': 1, 'me': <Namespace {...}>}>")
    #expect(try render("{% set ns = namespace(head=none) %}{% for i in range(100000) %}{% set ns.head = namespace(next=ns.head) %}{% endfor %}done") == "done")
}
