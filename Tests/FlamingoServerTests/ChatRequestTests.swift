import FlamingoCore
import FlamingoServer
import Foundation
import Testing

// Parsing and checking of chat completion bodies: every error names its field, with OpenAI's codes.

private func parse(_ json: String) throws -> ChatCompletionRequest {
    try ChatCompletionRequest(body: Data(json.utf8))
}

/// The APIError a body produces (nil when it parses).
private func error(_ json: String) -> APIError? {
    do {
        _ = try parse(json)
        return nil
    } catch {
        return error as? APIError
    }
}

@Test func parsesStringAndPartsContent() throws {
    let r = try parse("""
    {"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "image_url", "image_url": "data:image/png;base64,BBBB"},
            {"type": "text", "text": "please."}]},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Go"}],
     "max_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 42, "stop": "\\n", "stream": true,
     "stream_options": {"include_usage": true}, "n": 1, "logprobs": false, "user": "ignored"}
    """)
    #expect(r.model == "m")
    #expect(r.messages.count == 4)
    #expect(r.messages[0] == .init(role: .system, parts: [.text("Be brief.")]))
    #expect(r.messages[1].parts == [
        .text("Compare"),
        .image(url: "data:image/png;base64,AAAA", param: "messages[1].content[1].image_url.url"),
        .image(url: "data:image/png;base64,BBBB", param: "messages[1].content[2].image_url"),
        .text("please."),
    ])
    #expect(r.maxTokens == 7)
    #expect(r.temperature == 0)
    #expect(r.topP == 0.5)
    #expect(r.seed == 42)
    #expect(r.stop == ["\n"])
    #expect(r.stream)
    #expect(r.includeUsage)
}

@Test func defaultsAndAliases() throws {
    let r = try parse(#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "max_completion_tokens": 9, "stop": ["a", "b"]}"#)
    #expect(r.model == nil)
    #expect(r.maxTokens == 9)  // max_completion_tokens wins
    #expect(r.temperature == nil && r.topP == nil && r.seed == nil)
    #expect(r.stop == ["a", "b"])
    #expect(!r.stream && !r.includeUsage)
    let nulls = try parse(#"{"messages": [{"role": "developer", "content": "x"}], "max_tokens": null, "stop": null, "stream": null, "temperature": null}"#)
    #expect(nulls.maxTokens == nil && nulls.stop.isEmpty && !nulls.stream)
    #expect(nulls.messages[0].role == .developer)
}

@Test(arguments: [
    // body, status, code, param
    ("{not json", 400, "invalid_json", nil),
    ("", 400, "invalid_json", nil),
    ("[1, 2]", 400, "invalid_type", nil),
    (#"{"model": "m"}"#, 400, "missing_required_parameter", "messages"),
    (#"{"messages": "hi"}"#, 400, "invalid_type", "messages"),
    (#"{"messages": []}"#, 400, "empty_array", "messages"),
    (#"{"messages": [42]}"#, 400, "invalid_type", "messages[0]"),
    (#"{"messages": [{"content": "x"}]}"#, 400, "missing_required_parameter", "messages[0].role"),
    (#"{"messages": [{"role": "robot", "content": "x"}]}"#, 400, "invalid_value", "messages[0].role"),
    (#"{"messages": [{"role": "tool", "content": "x"}]}"#, 400, "invalid_value", "messages[0].role"),
    (#"{"messages": [{"role": "user"}]}"#, 400, "missing_required_parameter", "messages[0].content"),
    (#"{"messages": [{"role": "user", "content": 5}]}"#, 400, "invalid_type", "messages[0].content"),
    (#"{"messages": [{"role": "user", "content": [{"type": "audio"}]}]}"#, 400, "invalid_value", "messages[0].content[0].type"),
    (#"{"messages": [{"role": "user", "content": [{"text": "x"}]}]}"#, 400, "missing_required_parameter", "messages[0].content[0].type"),
    (#"{"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}"#, 400, "invalid_type", "messages[0].content[0].text"),
    (#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, 400, "missing_required_parameter", "messages[0].content[0].image_url"),
    (#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}"#, 400, "missing_required_parameter", "messages[0].content[0].image_url.url"),
    (#"{"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}"#, 400, "invalid_value", "messages[0].content[0]"),
    (#"{"messages": [{"role": "user", "content": "look: <image>"}]}"#, 400, "invalid_value", "messages[0].content"),
    (#"{"messages": [{"role": "assistant", "content": null}]}"#, 400, "unsupported_parameter", "messages[0].content"),
    (#"{"messages": [{"role": "user", "content": "x"}], "model": 3}"#, 400, "invalid_type", "model"),
    (#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}"#, 400, "invalid_type", "max_tokens"),
    (#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}"#, 400, "invalid_type", "max_tokens"),
    (#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#, 400, "invalid_value", "max_tokens"),
    (#"{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1}"#, 400, "invalid_value", "max_completion_tokens"),
    (#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, 400, "invalid_type", "temperature"),
    (#"{"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}"#, 400, "invalid_value", "temperature"),
    (#"{"messages": [{"role": "user", "content": "x"}], "top_p": 1.5}"#, 400, "invalid_value", "top_p"),
    (#"{"messages": [{"role": "user", "content": "x"}], "seed": "s"}"#, 400, "invalid_type", "seed"),
    (#"{"messages": [{"role": "user", "content": "x"}], "stop": 1}"#, 400, "invalid_type", "stop"),
    (#"{"messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]}"#, 400, "invalid_type", "stop[1]"),
    (#"{"messages": [{"role": "user", "content": "x"}], "stop": [""]}"#, 400, "invalid_value", "stop"),
    (#"{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#, 400, "invalid_type", "stream"),
    (#"{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}"#, 400, "invalid_value", "stream_options"),
    (#"{"messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": {"include_usage": 1}}"#, 400, "invalid_type", "stream_options.include_usage"),
    (#"{"messages": [{"role": "user", "content": "x"}], "n": 2}"#, 400, "unsupported_parameter", "n"),
    (#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true}"#, 400, "unsupported_parameter", "logprobs"),
    (#"{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5}"#, 400, "unsupported_parameter", "presence_penalty"),
    (#"{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}"#, 400, "unsupported_parameter", "tools"),
    (#"{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}"#, 400, "unsupported_parameter", "response_format"),
] as [(String, Int, String, String?)])
func rejectsBadBodies(body: String, status: Int, code: String, param: String?) throws {
    let e = try #require(error(body), "\(body) should be refused")
    #expect(e.status.code == status, "\(body)")
    #expect(e.code == code, "\(body): \(e.message)")
    #expect(e.param == param, "\(body): \(e.message)")
    #expect(e.type == "invalid_request_error")
}

@Test func tooManyStopSequences() {
    let stops = (0...ChatCompletionRequest.maxStopSequences).map { "\"s\($0)\"" }.joined(separator: ",")
    #expect(error(#"{"messages": [{"role": "user", "content": "x"}], "stop": [\#(stops)]}"#)?.param == "stop")
}

@Test func errorJSONHasOpenAIsShape() throws {
    let e = try #require(error(#"{"model": "m"}"#))
    #expect(e.json.serializedString ==
        #"{"error":{"message":"Missing required parameter: 'messages'.","type":"invalid_request_error","param":"messages","code":"missing_required_parameter"}}"#)
    let noParam = APIError(status: .badRequest, message: "m")
    #expect(noParam.json.serializedString == #"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}"#)
}

@Test func jsonRoundTrips() throws {
    let text = #"{"a":[1,2.5,"x\n\"y\"",true,null,{"b":-3}],"big":12345678901234,"u":"é😀\u0001"}"#
    let parsed = try JSON.parse(Data(text.utf8))
    #expect(parsed["big"] == .int(12345678901234))
    #expect(parsed["u"] == .string("é😀\u{01}"))
    #expect(try JSON.parse(parsed.serialized) == parsed)
    #expect(JSON.string("a\u{01}\n").serializedString == #""a\u0001\n""#)
}

@Test(arguments: [
    "", "   ", "{", "[1,]", #"{"a":1,}"#, "{a:1}", "[01]", "[1.]", "[.5]", "[1e]", "[-]", "[NaN]", "[tru]",
    #""\x""#, #""\ud800""#, #""\udc00x""#, "\"a\nb\"", "[1] 2", #"{"a" 1}"#, "[1e999]",
])
func rejectsMalformedJSON(text: String) {
    #expect(throws: JSONSyntaxError.self, "\(text)") { try JSON.parse(Data(text.utf8)) }
    #expect("\(text)") { try ChatCompletionRequest(body: Data(text.utf8)) } throws: { ($0 as? APIError)?.code == "invalid_json" }
}

@Test func parsesEdgeCases() throws {
    #expect(try JSON.parse(Data(#" {"a" : [ ] , "b":{}} "#.utf8)) == .object([("a", []), ("b", .object([]))]))
    #expect(try JSON.parse(Data(#""\ud83d\ude00 \u00e9 \/ \"""#.utf8)) == .string("😀 é / \""))
    #expect(try JSON.parse(Data("[-0, 9223372036854775807, 9223372036854775808, 1.5e2, -2E-1]".utf8))
            == [.int(0), .int(Int64.max), .double(9223372036854775808), .double(150), .double(-0.2)])
    let depth = ChatCompletionRequest.maxNesting
    let deep = String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1)
    #expect(throws: JSONSyntaxError.self) { try JSON.parse(Data(deep.utf8), maxDepth: depth) }
    #expect(throws: APIError.self) { try ChatCompletionRequest(body: Data(deep.utf8)) }
    let ok = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
    #expect(throws: Never.self) { try JSON.parse(Data(ok.utf8), maxDepth: depth) }
    // A body of a million nested arrays is refused, not a stack overflow.
    let hostile = String(repeating: "[", count: 1_000_000)
    #expect(throws: APIError.self) { try ChatCompletionRequest(body: Data(hostile.utf8)) }
    #expect(throws: JSONSyntaxError.self) { try JSON.parse(Data(hostile.utf8)) }
}
