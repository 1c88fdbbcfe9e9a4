import FlamingoModel
import FlamingoServer
import Foundation
import Testing

// The chat template, image URLs, and turning tokens into released text with stop sequences.

@Test func templateRendersTurnsAndImages() {
    let messages: [ChatCompletionRequest.Message] = [
        .init(role: .system, parts: [.text("You describe images.")]),
        .init(role: .user, parts: [.image(url: "u1", param: "p1"), .text("What is this?")]),
        .init(role: .assistant, parts: [.text("A cat.")]),
        .init(role: .user, parts: [.text("And these?"), .image(url: "u2", param: "p2"), .image(url: "u3", param: "p3")]),
    ]
    let turns = ChatTemplate().render(messages)
    #expect(turns.prompt == "You describe images.\nUser: <image>What is this?\nAssistant: A cat.\nUser: And these?<image><image>\nAssistant:")
    #expect(turns.images.map(\.url) == ["u1", "u2", "u3"])
    let instruct = ChatTemplate(endOfUtterance: "<end_of_utterance>").render(Array(messages[1...2]))
    #expect(instruct.prompt == "User: <image>What is this?<end_of_utterance>\nAssistant: A cat.<end_of_utterance>\nAssistant:")
}

@Test func plainTemplateIsTheContentsBackToBack() {
    let messages: [ChatCompletionRequest.Message] = [
        .init(role: .system, parts: [.text("Shapes. ")]),
        .init(role: .user, parts: [.image(url: "u1", param: "p1"), .text("Question: how many shapes are there? Answer:")]),
    ]
    let plain = ChatTemplate(style: .plain, endOfUtterance: "<end_of_utterance>").render(messages)
    #expect(plain.prompt == "Shapes. <image>Question: how many shapes are there? Answer:")
    #expect(plain.images.map(\.url) == ["u1"])
}

@Test func templateUsesEndOfUtteranceOnlyWhenTheTokenizerHasIt() throws {
    let tokenizer = try #require(try Fixtures.directory().tokenizer)
    #expect(ChatTemplate(tokenizer: tokenizer).endOfUtterance == nil)
}

@Test func dataURLsDecode() throws {
    let source = ImageSource()
    let png = try source.image(url: Fixtures.dataURL("circle.png"), param: "p")
    let direct = try RGBImage(decoding: Fixtures.imageData("circle.png"))
    #expect(png == direct)
    let jpeg = try source.image(url: Fixtures.dataURL("mountain.jpg"), param: "p")
    #expect(jpeg.width > 0)
    // MIME line breaks inside base64 are fine.
    let wrapped = "data:image/png;base64," + (try Fixtures.imageData("circle.png")).base64EncodedString(options: .lineLength76Characters)
    #expect(try source.image(url: wrapped, param: "p") == direct)
}

@Test(arguments: [
    ("data:image/png;base64,@@@not base64@@@", "invalid_base64"),
    ("data:image/png;base64," + Data("hello, I am text".utf8).base64EncodedString(), "invalid_image"),
    ("data:image/png;base64,", "invalid_image"),
    ("data:text/plain;base64,aGVsbG8=", "invalid_image"),
    ("data:image/png,rawbytes", "invalid_image_url"),
    ("data:image/png;base64", "invalid_image_url"),
    ("https://example.com/cat.png", "invalid_image_url"),
    ("file:///etc/hostname", "invalid_image_url"),
])
func badImageURLs(url: String, code: String) {
    do {
        _ = try ImageSource().image(url: url, param: "messages[0].content[1].image_url.url")
        Issue.record("\(url) should be refused")
    } catch let error as APIError {
        #expect(error.status == .badRequest)
        #expect(error.code == code, "\(url): \(error.message)")
        #expect(error.param == "messages[0].content[1].image_url.url")
    } catch {
        Issue.record("\(url): \(error)")
    }
}

@Test func localFilesOnlyWhenAllowed() throws {
    let path = Fixtures.images.appendingPathComponent("grey.png").path
    let allowed = ImageSource(allowLocalFiles: true)
    #expect(try allowed.image(url: "file://" + path, param: "p") == RGBImage(contentsOfFile: path))
    #expect(throws: APIError.self) { try allowed.image(url: "file:///nonexistent/x.png", param: "p") }
    #expect(throws: APIError.self) { try allowed.image(url: "file:relative.png", param: "p") }
}

@Test func imagesOverThePixelLimitAreRefusedBeforeDecoding() throws {
    let source = ImageSource(limits: ImageLimits(maxSide: 16_384, maxPixels: 100))
    do {
        _ = try source.image(url: Fixtures.dataURL("mountain.jpg"), param: "p")
        Issue.record("should be refused")
    } catch let error as APIError {
        #expect(error.code == "image_too_large", "\(error.message)")
    }
}

// MARK: - Released text

private func tokenizer() throws -> Tokenizer { try #require(try Fixtures.directory().tokenizer) }

/// Feeds `tokens`, returns the released pieces and whether a stop sequence ended it.
private func release(_ tokens: [Int], stop: [String], tokenizer: Tokenizer) -> (pieces: [String], stopped: Bool, fed: Int) {
    var text = CompletionText(tokenizer: tokenizer, stop: stop)
    var pieces: [String] = []
    var fed = 0
    for token in tokens {
        fed += 1
        pieces.append(text.append(token))
        if text.stopped { return (pieces, true, fed) }
    }
    pieces.append(text.finish())
    return (pieces, text.stopped, fed)
}

@Test func releasedTextEqualsTheWholeDecode() throws {
    let tokenizer = try tokenizer()
    var generator = SeededGenerator(seed: 7)
    for length in [1, 2, 5, 17, 40] {
        for _ in 0..<20 {
            let tokens = (0..<length).map { _ in Int(generator.next() % 642) }
            let (pieces, stopped, _) = release(tokens, stop: [], tokenizer: tokenizer)
            #expect(!stopped)
            #expect(pieces.joined() == tokenizer.decode(tokens, skipSpecialTokens: true), "\(tokens)")
        }
    }
    let words = tokenizer.encode("Hello world, this is a test of incremental decoding.", addSpecialTokens: false)
    let (pieces, _, _) = release(words, stop: [], tokenizer: tokenizer)
    #expect(pieces.joined() == tokenizer.decode(words, skipSpecialTokens: true))
    #expect(pieces.filter { !$0.isEmpty }.count > 3, "text should arrive in several pieces: \(pieces)")
}

@Test func stopSequencesCutTheTextAndAreNotReleased() throws {
    let tokenizer = try tokenizer()
    let tokens = tokenizer.encode("one two. three four. five", addSpecialTokens: false)
    let full = tokenizer.decode(tokens, skipSpecialTokens: true)

    let (pieces, stopped, fed) = release(tokens, stop: ["four"], tokenizer: tokenizer)
    #expect(stopped)
    #expect(pieces.joined() == String(full[..<full.range(of: "four")!.lowerBound]))
    #expect(fed < tokens.count, "generation should stop as soon as the stop sequence is complete")

    // The earliest of several stop sequences wins.
    #expect(release(tokens, stop: ["five", "two"], tokenizer: tokenizer).pieces.joined() == String(full[..<full.range(of: "two")!.lowerBound]))
    // A stop sequence that never completes is released at the end.
    let partial = release(tokens, stop: ["fivex", "e fo!"], tokenizer: tokenizer)
    #expect(!partial.stopped)
    #expect(partial.pieces.joined() == full)
    // Text that starts like a stop sequence is held back until it is known not to be one: here the
    // text ends inside "four. fiveX", so only finish() releases it.
    var text = CompletionText(tokenizer: tokenizer, stop: ["four. fiveX"])
    var released = ""
    for t in tokens { released += text.append(t) }
    #expect(released == String(full[..<full.range(of: "four")!.lowerBound]))
    released += text.finish()
    #expect(released == full)
}

@Test func responseChunksAreOpenAIs() {
    let f = ChatResponseFormat(id: "chatcmpl-x", created: 1700000000, model: "m")
    #expect(ServerSentEvents.event(f.roleChunk(includeUsage: false)) ==
        #"data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"# + "\n\n")
    #expect(f.contentChunk("Hi", includeUsage: true).serializedString ==
        #"{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#)
    #expect(f.finishChunk(.length, includeUsage: false).serializedString ==
        #"{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}"#)
    #expect(f.usageChunk(promptTokens: 3, completionTokens: 4).serializedString ==
        #"{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#)
    #expect(f.completion(text: "Hi", finishReason: .stop, promptTokens: 3, completionTokens: 1).serializedString ==
        #"{"id":"chatcmpl-x","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#)
    #expect(ServerSentEvents.done == "data: [DONE]\n\n")
    #expect(ChatResponseFormat.newID().hasPrefix("chatcmpl-"))
}
