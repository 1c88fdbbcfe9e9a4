import FlamingoCore
import Foundation
import Testing

// The one JSON reader/writer (tokenizer.json, the server's bodies): keys stay byte-exact, numbers
// keep integers exact, output round-trips.

@Test func keysStayByteExact() throws {
    // U+2126 OHM SIGN and U+03A9 GREEK CAPITAL OMEGA are canonically equivalent Swift Strings.
    let json = try JSON.parse(Data(#"{"\u2126": 1, "\u03a9": 2}"#.utf8))
    #expect(json.objectMembers?.count == 2)
    #expect(json["\u{2126}"]?.intValue == 1)
    #expect(json["\u{03A9}"]?.intValue == 2)
}

@Test func byteOrderMarkIsSkippedAndNumbersKeepTheirKind() throws {
    let json = try JSON.parse(Data([0xEF, 0xBB, 0xBF] + Array(#"[1, 2.0, -3.5, 12345678901234]"#.utf8)))
    #expect(json == [.int(1), .double(2), .double(-3.5), .int(12_345_678_901_234)])
    #expect(json.arrayValue?.map(\.intValue) == [1, 2, nil, 12_345_678_901_234])
}

@Test func writesWhatItReads() throws {
    let text = #"{"a":[1,2.5,"x\n\"y\"",null,true],"b":{},"😀":"é"}"#
    let json = try JSON.parse(Data(text.utf8))
    #expect(json.serializedString == text)
}

@Test func syntaxErrorsSayWhere() {
    #expect(throws: JSONSyntaxError(reason: "expected a string key", offset: 1)) { try JSON.parse(Data("{1:2}".utf8)) }
    #expect(throws: JSONSyntaxError(reason: "unterminated array", offset: nil)) { try JSON.parse(Data("[1".utf8)) }
    #expect(throws: JSONSyntaxError.self) { try JSON.parse(Data([0x22, 0xFF, 0x22])) }  // invalid UTF-8
}

/// Benchmark (prints, asserts no time): parsing a tokenizer.json-like document (a 50k-entry
/// vocabulary and 50k merges, ~2 MB) against Foundation's JSONSerialization in the same run.
@Test func parseSpeedAgainstFoundation() throws {
    var text = #"{"model":{"type":"BPE","vocab":{"#
    for i in 0..<50_000 { text += (i > 0 ? "," : "") + "\"▁tok\(i)\\u00e9\":\(i)" }
    text += #"},"merges":["#
    for i in 0..<50_000 { text += (i > 0 ? "," : "") + "\"▁t ok\(i)\"" }
    text += "]}}"
    let data = Data(text.utf8)
    let clock = ContinuousClock()
    var ours: JSON = .null
    var foundation: Any = 0
    // Best of 3 each, interleaved.
    var oursBest = Duration.seconds(1000), foundationBest = Duration.seconds(1000)
    for _ in 0..<3 {
        oursBest = min(oursBest, try clock.measure { ours = try JSON.parse(data) })
        foundationBest = min(foundationBest, try clock.measure { foundation = try JSONSerialization.jsonObject(with: data) })
    }
    let vocab = ours["model"]?["vocab"]?.objectMembers
    let foundationVocab = ((foundation as? [String: Any])?["model"] as? [String: Any])?["vocab"] as? [String: Any]
    #expect(vocab?.count == 50_000 && foundationVocab?.count == 50_000)
    #expect(vocab?[49_999].key == "▁tok49999é" && vocab?[49_999].value == .int(49_999))
    let mb = Double(data.count) / 1e6
    func rate(_ d: Duration) -> Double { mb / (Double(d.components.attoseconds) / 1e18 + Double(d.components.seconds)) }
    print(String(format: "JSON parse, %.1f MB tokenizer-like: ours %.0f MB/s, JSONSerialization %.0f MB/s, ratio %.2fx",
                 mb, rate(oursBest), rate(foundationBest), rate(oursBest) / rate(foundationBest)))
}
