import FlamingoModel
import FlamingoServer
import Foundation
import FuzzSupport

// An image_url part's URL as the server reads it (`ImageSource.image(url:param:)`): the
// `data:[<media type>][;base64],<data>` syntax, base64 with MIME line breaks, then the image
// decoder. Every refusal must be an `APIError` with a JSON body. Local files stay disabled (the
// server's default), so no input can name a file.
//
// Image limit 1 Mpixel instead of the server's 16.7, to keep each input inside the fuzzer's
// memory limit; the same code checks it.

private let source = ImageSource(allowLocalFiles: false, limits: ImageLimits(maxSide: 4096, maxPixels: 1 << 20))

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let url = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let image = try source.image(url: url, param: "messages[0].content[1].image_url.url")
        invariant(image.width > 0 && image.height > 0, "decoded a \(image.width)x\(image.height) image")
    } catch let error as APIError {
        _ = error.json.serialized
    } catch {
        invariant(false, "refused with \(type(of: error)), not an APIError: \(error)")
    }
    return 0
}

@main struct DataURLFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
