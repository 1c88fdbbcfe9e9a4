/// An 8-bit RGB image: `height` rows of `width` pixels, each pixel three bytes R, G, B.
///
/// This is what the decoders produce and what `ImagePreprocessor` consumes. It matches the
/// `np.array(convert_to_rgb(pil_image))` array transformers works on: shape [height, width, 3].
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// RGB interleaved, row-major: pixel (x, y) channel c is `pixels[(y * width + x) * 3 + c]`.
    public let pixels: [UInt8]

    /// Wraps pixels already in RGB layout. Precondition: `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage \(width)x\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Largest image the decoders accept. Checked from the header, before any pixel memory is allocated.
public struct ImageLimits: Sendable, Equatable, CustomStringConvertible {
    public var maxSide: Int
    public var maxPixels: Int

    public init(maxSide: Int = 16_384, maxPixels: Int = 100_000_000) {
        self.maxSide = maxSide
        self.maxPixels = maxPixels
    }

    public static let `default` = ImageLimits()

    public var description: String { "at most \(maxSide) pixels per side and \(maxPixels) pixels" }
}

/// What happens to transparency when an image is flattened to RGB.
public enum AlphaHandling: Sendable, Equatable {
    /// Composite onto opaque white with PIL's integer `alpha_composite`: what transformers'
    /// `convert_to_rgb` does to every image handed to an image processor. The default.
    case compositeOnWhite
    /// Drop the alpha channel (PIL `convert("RGB")`): what transformers' `load_image` and
    /// torchvision's `decode_image(mode=RGB)` do to images loaded from a path or URL.
    case discard
}
