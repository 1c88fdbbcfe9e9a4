import Foundation

/// Turns a prompt with `<image>` markers into token ids the way IdeficsProcessor does
/// (transformers/models/idefics/processing_idefics.py): BOS, then each text segment stripped of
/// spaces, each image as `<fake_token_around_image><image><fake_token_around_image>` (consecutive
/// images share the fake token between them), tokenized without adding special tokens again.
public struct PromptBuilder: Sendable {
    public static let imageMarker = "<image>"
    public static let fakeImageToken = "<fake_token_around_image>"

    public let tokenizer: Tokenizer

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The processor's full text for `prompt`, and how many images it references. `addBOS` false:
    /// no BOS in front (a chat template that already wrote it; transformers' processors then do not
    /// add another).
    public func expandedText(_ prompt: String, addBOS: Bool = true) -> (text: String, imageCount: Int) {
        let segments = prompt.components(separatedBy: Self.imageMarker)
        var text = addBOS ? tokenizer.bosTokenID.flatMap { tokenizer.token(for: $0) } ?? "" : ""
        var lastWasImage = false
        for (i, segment) in segments.enumerated() {
            if i > 0 {
                text += lastWasImage ? Self.imageMarker + Self.fakeImageToken
                                     : Self.fakeImageToken + Self.imageMarker + Self.fakeImageToken
                lastWasImage = true
            }
            let stripped = segment.trimmingCharacters(in: CharacterSet(charactersIn: " "))
            if !stripped.isEmpty {
                text += stripped
                lastWasImage = false
            }
        }
        return (text, segments.count - 1)
    }

    /// Token ids of `prompt`.
    public func tokens(_ prompt: String, addBOS: Bool = true) -> [Int] {
        tokenizer.encode(expandedText(prompt, addBOS: addBOS).text, addSpecialTokens: false)
    }
}
