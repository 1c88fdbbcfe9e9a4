import FlamingoCore
import FlamingoServer
import Foundation
import FuzzSupport

// A model's chat_template (tokenizer_config.json, chat_template.jinja or --chat-template FILE) as
// the server loads and renders it: `ModelChatTemplate(text:...)` parses the Jinja-subset source,
// then renders it for a fixed conversation (system text, user turns with text and image parts,
// an assistant turn) with and without the generation prompt, as every chat request would.
// A template that does not load must be refused with a ChatTemplateLoadError naming the line; one
// that loads may refuse a conversation (`raise_exception`, a type error) only with a
// ChatTemplateError. Both are typed throws, so what this looks for is a crash, a hang or
// unbounded memory in the lexer, parser or interpreter.

private let messages: [JSON] = {
    let text = """
        [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
         {"role": "assistant", "content": "Three triangles."},
         {"role": "user", "content": [{"type": "text", "text": "And here?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
          "name": null}]
        """
    guard case .array(let list) = try! JSON.parse(Data(text.utf8)) else { fatalError("fuzz setup: messages") }
    return list
}()

private let specialTokens = [("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>")]
private let fixedNow = Date(timeIntervalSince1970: 1_780_000_000)
private let utc = TimeZone(identifier: "UTC")!

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { bytes in
        let template: ModelChatTemplate
        do {
            template = try ModelChatTemplate(text: String(decoding: bytes, as: UTF8.self), origin: "fuzz", specialTokens: specialTokens)
        } catch let error as ChatTemplateLoadError {
            invariant(!(error.errorDescription ?? "").isEmpty, "a load error without a message: \(error)")
            return
        } catch {
            invariant(false, "refused with \(type(of: error)), not a ChatTemplateLoadError: \(error)")
            return
        }
        for addGenerationPrompt in [true, false] {
            do {
                _ = try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt, now: fixedNow, timeZone: utc)
            } catch let error as ChatTemplateError {
                invariant(!(error.errorDescription ?? "").isEmpty, "a render error without a message: \(error)")
            } catch {
                invariant(false, "refused with \(type(of: error)), not a ChatTemplateError: \(error)")
            }
        }
    }
    return 0
}

@main struct ChatTemplateFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
