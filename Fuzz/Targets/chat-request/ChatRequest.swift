import FlamingoCore
import FlamingoModel
import FlamingoServer
import Foundation
import FuzzSupport

// A POST /v1/chat/completions body as the server handles it: `ChatCompletionRequest(body:)`
// (strict JSON, every field checked), then `ChatRequestBuilder.prepare` for the test fixture model
// Tests/Fixtures/models/interval1 (chat template, tokenizer, limits, image_url decoding and
// preprocessing), for every template style. Every refusal must be an `APIError` whose JSON body
// is valid JSON, as the server sends it.
//
// Image limit 1 Mpixel instead of the server's 16.7, to keep each input inside the fuzzer's
// memory limit; the same code checks it.

private let builders: [ChatRequestBuilder] = {
    do {
        let directory = try ModelDirectory(FuzzFixtures.models.appendingPathComponent("interval1"))
        var limits = ServerLimits()
        limits.maxImagePixels = 1 << 20
        return try ChatTemplate.Style.allCases.map {
            try ChatRequestBuilder(directory: directory, limits: limits, allowLocalFiles: false, chatTemplate: .builtIn($0))
        }
    } catch {
        fatalError("fuzz setup: cannot load the fixture model: \(error)")
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { body in
        let request: ChatCompletionRequest
        do {
            request = try ChatCompletionRequest(body: body)
        } catch {
            refused(error)
            return
        }
        for builder in builders {
            do {
                let prepared = try builder.prepare(request)
                invariant(prepared.generation.maxTokens >= 1, "prepared a request for \(prepared.generation.maxTokens) tokens")
            } catch {
                refused(error)
            }
        }
    }
    return 0
}

/// What the server would answer: a 4xx with a JSON body.
private func refused(_ error: any Error) {
    guard let apiError = error as? APIError else {
        invariant(false, "refused with \(type(of: error)), not an APIError: \(error)")
        return
    }
    let body = apiError.json.serialized
    invariant((try? JSON.parse(body)) != nil, "the error body is not JSON: \(String(decoding: body, as: UTF8.self))")
}

@main struct ChatRequestFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
