import FlamingoCore
import FlamingoModel
import Foundation
import FuzzSupport

// PNG and JPEG from bytes through the model's image loader (`RGBImage(decoding:)`: format sniffing,
// libpng/libjpeg in Sources/CImageCodecs, sample conversion to RGB with alpha composited as
// transformers does), then the IDEFICS preprocessor (bicubic resize to 32 px, normalisation) as a
// request's image goes. Both alpha rules run.
//
// Limits: 1 Mpixel (the product default is 100 Mpixel, the server's 16.7): the same code checks
// them, and a fuzzer's input must stay within its memory limit and time-out.

private let limits = ImageLimits(maxSide: 4096, maxPixels: 1 << 20)
private let preprocessor = ImagePreprocessor(config: PreprocessorConfig(imageSize: 32))

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { bytes in
        for alpha in [AlphaHandling.compositeOnWhite, .discard] {
            guard let image = try? RGBImage(decoding: bytes, name: "fuzz", limits: limits, alpha: alpha) else { return }
            invariant(image.width > 0 && image.height > 0 && image.width * image.height <= limits.maxPixels,
                      "decoded a \(image.width)x\(image.height) image")
            let pixels = preprocessor(image)
            invariant(pixels.shape == [3, 32, 32], "preprocessed to \(pixels.shape)")
        }
    }
    return 0
}

@main struct ImageFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
