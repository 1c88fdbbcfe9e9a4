import FlamingoModel
import Foundation
import FuzzSupport

// tokenizer.json loading from bytes (`Tokenizer(data:configData:)`): JSON, normalizer,
// pre-tokenizer, BPE model, added tokens, post-processor, decoder, special tokens. The bytes after
// the first NUL, if any, are the tokenizer_config.json (a NUL never occurs in JSON text, so a
// plain tokenizer.json is a valid input as it is).
//
// A tokenizer that loads promises that `encode` and `decode` cannot fail (its doc comment), so a
// few texts are encoded and decoded with it, and ids just past its vocabulary decoded (the
// model's head may be wider than the tokenizer, and the server decodes what it generates).

private let texts = [
    "Hello world", "<image>In this picture:<image> a cat.<|endofchunk|>", "  two  spaces\tand\nnewlines  ",
    "naïve café, 日本語, 🙂‍↔️ and Ω Ω", "\u{0}\u{1}\u{7F}", "▁▁x</s><s>", "",
]

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { input in
        let split = input.firstIndex(of: 0)
        let json = split.map { input[input.startIndex..<$0] } ?? input
        let config = split.map { input[input.index(after: $0)...] }
        guard let tokenizer = try? Tokenizer(data: Data(json), configData: config.map { Data($0) }) else { return }
        for text in texts {
            for special in [true, false] {
                let ids = tokenizer.encode(text, addSpecialTokens: special)
                _ = tokenizer.decode(ids, skipSpecialTokens: special)
                for id in ids { _ = (tokenizer.token(for: id), tokenizer.isSpecialToken(id)) }
            }
        }
        let v = tokenizer.vocabularySize
        _ = tokenizer.decode([0, 1, max(v - 1, 0), v, v + 1, v + 100], skipSpecialTokens: false)
        _ = tokenizer.decode([max(v - 1, 0), v], skipSpecialTokens: true)
        _ = tokenizer.tokenID(for: "<image>")
    }
    return 0
}

@main struct TokenizerFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
