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
