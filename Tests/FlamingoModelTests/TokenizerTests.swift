import Foundation
import Testing
import FlamingoModel

// Golden cases come from scripts/reference/make_tokenizer_fixtures.py (tokenizers 0.23 and
// transformers' PreTrainedTokenizerFast agree on all of them). Strings are compared by Unicode
// scalars, because Swift `==` on String treats canonically-equivalent text as equal and would
// hide normalisation bugs.

private let fixtureDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tokenizer")

struct TokenizerCase: Codable, Sendable, CustomTestStringConvertible {
    var tokenizer: String
    var text: String
    var ids: [Int]
    var idsNoSpecial: [Int]
    var tokens: [String]
    var decoded: String
    var decodedSkip: String

    enum CodingKeys: String, CodingKey {
        case tokenizer, text, ids, tokens, decoded
        case idsNoSpecial = "ids_no_special"
        case decodedSkip = "decoded_skip"
    }

    var testDescription: String {
        let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
        return "\(tokenizer): \(shown.debugDescription)"
    }
}

private struct CaseFile: Codable {
    var cases: [TokenizerCase]
}

/// Loaded once; a missing or broken file yields no cases, which `fixturesArePresent` reports.
private let fixtureCases: [TokenizerCase] = {
    guard let data = try? Data(contentsOf: fixtureDirectory.appendingPathComponent("cases.json")),
          let file = try? JSONDecoder().decode(CaseFile.self, from: data)
    else { return [] }
    return file.cases
}()

private let fixtureTokenizerNames = ["llama", "metaspace", "llama_v5"]

/// Each fixture tokenizer loaded once and shared by all cases (Tokenizer is Sendable).
private let fixtureTokenizers: [String: Tokenizer] = {
    var out: [String: Tokenizer] = [:]
    for name in fixtureTokenizerNames {
        out[name] = try? Tokenizer(contentsOf: fixtureDirectory.appendingPathComponent(name).appendingPathComponent("tokenizer.json"))
    }
    return out
}()

private func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }

private func fixtureData(_ name: String) throws -> Data {
    try Data(contentsOf: fixtureDirectory.appendingPathComponent(name).appendingPathComponent("tokenizer.json"))
}

/// The llama fixture as a mutable JSON object, for building broken variants.
private func llamaJSON(_ edit: (inout [String: Any]) -> Void) throws -> Data {
    var object = try #require(try JSONSerialization.jsonObject(with: fixtureData("llama")) as? [String: Any])
    edit(&object)
    return try JSONSerialization.data(withJSONObject: object)
}

@Suite("Tokenizer")
struct TokenizerTests {
    @Test func fixturesArePresent() throws {
        #expect(fixtureCases.count == 198)
        for name in fixtureTokenizerNames {
            // Load again with `try` so a failure shows the actual error.
            _ = try Tokenizer(contentsOf: fixtureDirectory.appendingPathComponent(name))
            #expect(fixtureTokenizers[name] != nil)
        }
    }

    @Test("encode matches HF", arguments: fixtureCases)
    func encodeMatchesGolden(_ c: TokenizerCase) throws {
        let tokenizer = try #require(fixtureTokenizers[c.tokenizer])
        let ids = tokenizer.encode(c.text)
        #expect(ids == c.ids)
        #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.idsNoSpecial)
        #expect(ids.map { tokenizer.token(for: $0).map(scalars) } == c.tokens.map(scalars))
    }

    @Test("decode matches HF", arguments: fixtureCases)
    func decodeMatchesGolden(_ c: TokenizerCase) throws {
        let tokenizer = try #require(fixtureTokenizers[c.tokenizer])
        #expect(scalars(tokenizer.decode(c.ids)) == scalars(c.decoded))
        #expect(scalars(tokenizer.decode(c.ids, skipSpecialTokens: true)) == scalars(c.decodedSkip))
    }

    /// Where HF round-trips (decode-skip of the golden ids gives the text back), so must we.
    @Test("round trip", arguments: fixtureCases.filter { scalars($0.decodedSkip) == scalars($0.text) })
    func roundTrip(_ c: TokenizerCase) throws {
        let tokenizer = try #require(fixtureTokenizers[c.tokenizer])
        #expect(scalars(tokenizer.decode(tokenizer.encode(c.text), skipSpecialTokens: true)) == scalars(c.text))
    }

    @Test func vocabularyAndSpecialTokens() throws {
        for name in fixtureTokenizerNames {
            let tokenizer = try #require(fixtureTokenizers[name])
            #expect(tokenizer.vocabularySize == 643)
            #expect(tokenizer.bosTokenID == 1)
            #expect(tokenizer.eosTokenID == 2)
            #expect(tokenizer.tokenID(for: "<image>") == 641)
            #expect(tokenizer.tokenID(for: "<fake_token_around_image>") == 640)
            #expect(tokenizer.tokenID(for: "<0xE4>") == 231)
            #expect(tokenizer.tokenID(for: "no such token") == nil)
            #expect(tokenizer.token(for: 641) == "<image>")
            #expect(tokenizer.token(for: 643) == nil)
            #expect(tokenizer.token(for: -1) == nil)
            #expect(tokenizer.isSpecialToken(1) && tokenizer.isSpecialToken(641) && !tokenizer.isSpecialToken(374))
            // Unknown ids are ignored by decode, as in HF.
            #expect(tokenizer.decode([374, 99_999, -5]) == "a")
        }
    }

    /// Byte-fallback runs decode to text when valid UTF-8, else one U+FFFD per byte (HF rule).
    @Test func byteFallbackDecoding() throws {
        let llama = try #require(fixtureTokenizers["llama"])
        let byte = { (b: Int) in 3 + b }  // <0x00> is id 3 in the fixtures
        #expect(llama.token(for: byte(0xE4)) == "<0xE4>")
        let a = 374  // "▁a"
        #expect(scalars(llama.decode([byte(0xE4), byte(0xBD), byte(0xA0)])) == scalars("你"))
        #expect(scalars(llama.decode([byte(0xE4), byte(0xBD)])) == scalars("\u{FFFD}\u{FFFD}"))
        #expect(scalars(llama.decode([a, byte(0xE4), byte(0xBD), a, byte(0xA0)])) == scalars("a\u{FFFD}\u{FFFD} a\u{FFFD}"))
        #expect(scalars(llama.decode([byte(0xFF)])) == scalars("\u{FFFD}"))
        // The metaspace fixture has no ByteFallback decoder, so byte tokens stay literal.
        let metaspace = try #require(fixtureTokenizers["metaspace"])
        #expect(metaspace.decode([a, byte(0xE4), byte(0xBD), a, byte(0xA0)]) == "a<0xE4><0xBD> a<0xA0>")
    }

    /// A few-thousand-character IDEFICS prompt must encode in milliseconds; the legacy LLaMA
    /// file makes the whole prompt one BPE word, the worst case for a naive merge loop.
    @Test func encodesLongPromptsAndRoundTrips() throws {
        let marker = "<fake_token_around_image><image><fake_token_around_image>"
        let turn = marker + "Question: What is in the image? Answer: a flamingo standing in shallow water 🦩.\n"
        let prompt = String(repeating: turn, count: 30)
        #expect(prompt.count > 4000)
        let plain = String(repeating: "the quick brown fox jumps over the lazy dog 12345 你好 ", count: 400)
        for name in fixtureTokenizerNames {
            let tokenizer = try #require(fixtureTokenizers[name])
            let clock = ContinuousClock()
            var ids: [Int] = []
            let promptTime = clock.measure { ids = tokenizer.encode(prompt) }
            #expect(scalars(tokenizer.decode(ids, skipSpecialTokens: false)).count > 0)
            let plainTime = clock.measure { ids = tokenizer.encode(plain) }
            // Printed for the record; speed is not asserted (timings depend on the machine's load).
            print("encode \(name): \(prompt.count)-char prompt \(promptTime), \(plain.count)-char text \(plainTime) (\(ids.count) ids)")
            // The metaspace fixture has no ByteFallback decoder, so only the others round-trip
            // text with out-of-vocabulary characters ("z").
            if name != "metaspace" {
                let roundTrips = scalars(tokenizer.decode(ids, skipSpecialTokens: true)) == scalars(plain)
                #expect(roundTrips)
            }
        }
    }

    @Test func loadsFromDirectoryAndData() throws {
        let fromDirectory = try Tokenizer(contentsOf: fixtureDirectory.appendingPathComponent("llama"))
        let fromData = try Tokenizer(data: fixtureData("llama"))
        let text = "User:<image>Describe this image.<end_of_utterance>"
        #expect(fromDirectory.encode(text) == fromData.encode(text))
        // Without tokenizer_config.json, bos/eos fall back to the special <s> and </s>.
        #expect(fromData.bosTokenID == 1 && fromData.eosTokenID == 2)
    }

    // MARK: - Errors

    @Test func rejectsInvalidJSON() {
        #expect(throws: TokenizerError.self) { try Tokenizer(data: Data("this is not json".utf8)) }
        #expect(throws: TokenizerError.self) { try Tokenizer(data: Data()) }
        #expect(throws: TokenizerError.invalidField(component: "tokenizer", field: "(root)", expected: "an object")) {
            try Tokenizer(data: Data("[1, 2]".utf8))
        }
        #expect(throws: TokenizerError.invalidJSON("tokenizer_config.json: expected a string key at byte 1")) {
            try Tokenizer(data: fixtureData("llama"), configData: Data("{nope}".utf8))
        }
        do {
            let data = try fixtureData("llama")
            _ = try Tokenizer(data: data.prefix(data.count / 2))
            Issue.record("truncated JSON was accepted")
        } catch let error as TokenizerError {
            guard case .invalidJSON = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(error.localizedDescription.contains("not valid JSON"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func rejectsMissingFile() {
        let url = fixtureDirectory.appendingPathComponent("does-not-exist/tokenizer.json")
        let error = #expect(throws: TokenizerError.self) { try Tokenizer(contentsOf: url) }
        guard case .unreadableFile(let path, _)? = error else {
            Issue.record("unexpected error \(String(describing: error))")
            return
        }
        #expect(path.hasSuffix("does-not-exist/tokenizer.json"))
    }

    @Test func rejectsUnknownModelType() throws {
        let data = try llamaJSON { $0["model"] = ["type": "Unigram", "vocab": [] as [Any]] }
        #expect(throws: TokenizerError.unsupportedComponent(component: "model", type: "Unigram")) { try Tokenizer(data: data) }
    }

    @Test func rejectsUnknownNormalizer() throws {
        let data = try llamaJSON { $0["normalizer"] = ["type": "BertNormalizer", "lowercase": true] }
        let expected = TokenizerError.unsupportedComponent(component: "normalizer", type: "BertNormalizer")
        #expect(throws: expected) { try Tokenizer(data: data) }
        #expect(expected.localizedDescription == "Tokenizer normalizer of type 'BertNormalizer' is not supported")
        // Nested inside a Sequence too.
        let nested = try llamaJSON {
            $0["normalizer"] = ["type": "Sequence", "normalizers": [["type": "Prepend", "prepend": "▁"], ["type": "Precompiled"]]]
        }
        #expect(throws: TokenizerError.unsupportedComponent(component: "normalizer", type: "Precompiled")) { try Tokenizer(data: nested) }
    }

    @Test func rejectsUnsupportedComponents() throws {
        let byteLevel = try llamaJSON { $0["pre_tokenizer"] = ["type": "ByteLevel", "add_prefix_space": false] }
        #expect(throws: TokenizerError.unsupportedComponent(component: "pre-tokenizer", type: "ByteLevel")) { try Tokenizer(data: byteLevel) }
        let split = try llamaJSON { $0["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "\\s+"], "behavior": "Isolated"] }
        #expect(throws: TokenizerError.unsupportedComponent(component: "pre-tokenizer", type: "Split")) { try Tokenizer(data: split) }
        let decoder = try llamaJSON { $0["decoder"] = ["type": "WordPiece", "prefix": "##"] }
        #expect(throws: TokenizerError.unsupportedComponent(component: "decoder", type: "WordPiece")) { try Tokenizer(data: decoder) }
        let post = try llamaJSON { $0["post_processor"] = ["type": "BertProcessing"] }
        #expect(throws: TokenizerError.unsupportedComponent(component: "post-processor", type: "BertProcessing")) { try Tokenizer(data: post) }
        let regex = try llamaJSON { $0["normalizer"] = ["type": "Replace", "pattern": ["Regex": " +"], "content": "▁"] }
        #expect(throws: TokenizerError.unsupportedOption(component: "normalizer", option: "pattern", value: "Regex \" +\"")) {
            try Tokenizer(data: regex)
        }
        let noType = try llamaJSON { $0["decoder"] = ["content": " "] }
        #expect(throws: TokenizerError.invalidField(component: "decoder", field: "type", expected: "a string")) { try Tokenizer(data: noType) }
    }

    @Test func rejectsBadMerges() throws {
        let unknown = try llamaJSON { json in
            guard var model = json["model"] as? [String: Any], var merges = model["merges"] as? [Any] else { return }
            merges.append("zz qq")
            model["merges"] = merges
            json["model"] = model
        }
        let error = #expect(throws: TokenizerError.self) { try Tokenizer(data: unknown) }
        guard case .invalidMerge(let index, _, let reason)? = error else {
            Issue.record("unexpected error \(String(describing: error))")
            return
        }
        #expect(index == 267 && reason.contains("'zz'"))
        let malformed = try llamaJSON { json in
            guard var model = json["model"] as? [String: Any] else { return }
            model["merges"] = ["a b c"]
            json["model"] = model
        }
        let malformedError = #expect(throws: TokenizerError.self) { try Tokenizer(data: malformed) }
        guard case .invalidMerge(0, "a b c", _)? = malformedError else {
            Issue.record("unexpected error \(String(describing: malformedError))")
            return
        }
    }

    // MARK: - Synthetic tokenizers (expectations from tokenizers 0.23.3)

    /// Lowercase normalizer, Metaspace(always, split), BPE without byte fallback, and added
    /// tokens exercising single_word, lstrip/rstrip, normalized and special.
    static let flagsTokenizer = #"""
    {"version": "1.0", "truncation": null, "padding": null, "added_tokens": [{"id": 35, "content": "ony", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false}, {"id": 38, "content": "[X]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}, {"id": 39, "content": "<mask>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": false}, {"id": 40, "content": "HEY", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}], "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}, "post_processor": null, "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}, "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false, "ignore_merges": false, "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10, "k": 11, "l": 12, "m": 13, "n": 14, "o": 15, "p": 16, "q": 17, "r": 18, "s": 19, "t": 20, "u": 21, "v": 22, "w": 23, "x": 24, "y": 25, "z": 26, "▁": 27, "Ω": 28, "▁h": 29, "▁he": 30, "ll": 31, "▁hell": 32, "▁hello": 33, "on": 34, "ony": 35, "▁a": 36, "▁an": 37}, "merges": [["▁", "h"], ["▁h", "e"], ["l", "l"], ["▁he", "ll"], ["▁hell", "o"], ["o", "n"], ["on", "y"], ["▁", "a"], ["▁a", "n"]]}}
    """#

    struct FlagCase: Sendable, CustomTestStringConvertible {
        var text: String
        var ids: [Int]
        var decoded: String
        var decodedSkip: String
        var testDescription: String { text.debugDescription }
    }

    static let flagCases: [FlagCase] = [
        .init(text: "hello anthony", ids: [33, 37, 20, 8, 35], decoded: "hello anthony", decodedSkip: "hello anthony"),
        .init(text: "Hello  <mask>  there", ids: [33, 39, 27, 20, 8, 5, 18, 5], decoded: "hello<mask> there", decodedSkip: "hello<mask> there"),
        .init(text: "ony tony ony", ids: [35, 27, 20, 35, 27, 35], decoded: "ony tony ony", decodedSkip: "ony tony ony"),
        .init(text: "say HEY hey Hey", ids: [27, 19, 1, 25, 27, 40, 27, 40, 27, 40], decoded: "say hey hey hey", decodedSkip: "say hey hey hey"),
        .init(text: "[X]hello[X]", ids: [38, 33, 38], decoded: "[X] hello[X]", decodedSkip: "hello"),
        .init(text: "a\u{2126}b\u{03A9}", ids: [36, 0, 2, 0], decoded: "a<unk>b<unk>", decodedSkip: "a<unk>b<unk>"),
        .init(text: "xyz 123 !!", ids: [27, 24, 25, 26, 27, 0, 27, 0], decoded: "xyz <unk> <unk>", decodedSkip: "xyz <unk> <unk>"),
        .init(text: "  <mask>", ids: [39], decoded: "<mask>", decodedSkip: "<mask>"),
        .init(text: "ab<mask>ony<mask>[X] ony", ids: [36, 2, 39, 35, 39, 38, 27, 35], decoded: "ab<mask>ony<mask>[X] ony", decodedSkip: "ab<mask>ony<mask> ony"),
        .init(text: "", ids: [], decoded: "", decodedSkip: ""),
    ]

    @Test("added-token flags", arguments: TokenizerTests.flagCases)
    func addedTokenFlags(_ c: FlagCase) throws {
        let tokenizer = try Tokenizer(data: Data(Self.flagsTokenizer.utf8))
        #expect(tokenizer.encode(c.text) == c.ids)
        #expect(scalars(tokenizer.decode(c.ids)) == scalars(c.decoded))
        #expect(scalars(tokenizer.decode(c.ids, skipSpecialTokens: true)) == scalars(c.decodedSkip))
        // A normalized added token decodes as its normalised form, as in tokenizers >= 0.22.
        #expect(tokenizer.token(for: 40) == "hey")
        #expect(tokenizer.tokenID(for: "HEY") == 40)
    }

    /// Byte fallback, unfused unk, ignore_merges and byte-exact vocabulary keys:
    /// U+2126 OHM SIGN is canonically equivalent to the in-vocabulary U+03A9 but must not match it.
    static func byteTokenizer(ignoreMerges: Bool) -> String {
        #"""
        {"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}, "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": true, "ignore_merges": \#(ignoreMerges), "vocab": {"<unk>": 0, "<0xE2>": 1, "<0x84>": 2, "<0xA6>": 3, "\u03a9": 4, "a": 5, "b": 6, "c": 7, "ab": 8, "abc": 9}, "merges": [["a", "b"]]}}
        """#
    }

    @Test(arguments: [false, true])
    func byteExactVocabularyAndIgnoreMerges(ignoreMerges: Bool) throws {
        let tokenizer = try Tokenizer(data: Data(Self.byteTokenizer(ignoreMerges: ignoreMerges).utf8))
        #expect(tokenizer.encode("abc") == (ignoreMerges ? [9] : [8, 7]))
        #expect(tokenizer.encode("\u{2126}\u{03A9}") == [1, 2, 3, 4])
        #expect(scalars(tokenizer.decode([1, 2, 3, 4])) == scalars("\u{2126}\u{03A9}"))
        #expect(tokenizer.encode("ab\u{E9}\u{E9}c") == [8, 0, 0, 7])
        #expect(tokenizer.tokenID(for: "\u{2126}") == nil)
        #expect(tokenizer.tokenID(for: "\u{03A9}") == 4)
        #expect(tokenizer.vocabularySize == 10)
        #expect(tokenizer.bosTokenID == nil)
    }

    /// Legacy "a b" merges and [a, b] merges load to the same tokenizer.
    @Test func mergeFormatsAgree() throws {
        let legacy = try Tokenizer(data: fixtureData("llama"))
        let arrays = try llamaJSON { json in
            guard var model = json["model"] as? [String: Any], let merges = model["merges"] as? [String] else { return }
            model["merges"] = merges.map { $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init) }
            json["model"] = model
        }
        let converted = try Tokenizer(data: arrays)
        for c in fixtureCases where c.tokenizer == "llama" {
            #expect(converted.encode(c.text) == legacy.encode(c.text))
        }
    }

    /// tokenizer_config.json's add_bos/add_eos apply when tokenizer.json has no post-processor.
    @Test func configTemplateWithoutPostProcessor() throws {
        let data = try llamaJSON { $0["post_processor"] = NSNull() }
        let config = Data(#"{"add_bos_token": true, "add_eos_token": true, "bos_token": {"content": "<s>"}, "eos_token": "</s>"}"#.utf8)
        let tokenizer = try Tokenizer(data: data, configData: config)
        let ids = tokenizer.encode("a")
        #expect(ids == [1, 374, 2])
        #expect(tokenizer.encode("a", addSpecialTokens: false) == [374])
        let bare = try Tokenizer(data: data)
        #expect(bare.encode("a") == [374])
        let badConfig = Data(#"{"bos_token": "<nope>"}"#.utf8)
        #expect(throws: TokenizerError.unknownToken(component: "tokenizer_config bos_token", token: "<nope>")) {
            try Tokenizer(data: data, configData: badConfig)
        }
    }
}
