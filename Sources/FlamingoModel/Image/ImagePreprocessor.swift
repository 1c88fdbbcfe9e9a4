import FlamingoCore

/// transformers' `IdeficsImageProcessor` (5.x, default torchvision backend) for one image:
/// resize to height x width with antialiased bicubic on uint8, then rescale and normalise.
///
/// The arithmetic follows `TorchvisionBackend._preprocess` so that results agree to float32
/// rounding: with both rescale and normalise on, the rescale is fused into the normalisation
/// (`mean / rescale_factor`, `std / rescale_factor`, computed in f32) and each value is
/// `(x - mean') / std'` in f32, x being the resized uint8 value.
/// RGB conversion (including alpha compositing) happens when the image is decoded; see `RGBImage`.
public struct ImagePreprocessor: Sendable {
    public let config: PreprocessorConfig

    public init(config: PreprocessorConfig = PreprocessorConfig()) {
        self.config = config
    }

    /// Output height and width.
    public var outputSize: (height: Int, width: Int) { (config.height, config.width) }

    /// The resized 8-bit image, before rescaling (what the model would see as uint8).
    public func resized(_ image: RGBImage) -> RGBImage {
        guard config.doResize, image.width > 0, image.height > 0 else { return image }
        let resampler = BicubicResampler(inWidth: image.width, inHeight: image.height,
                                         outWidth: config.width, outHeight: config.height)
        return resampler(image)
    }

    /// pixel_values for one image: [3, height, width] f32, channel-first.
    /// (Without `do_resize` the image keeps its own size.)
    public func callAsFunction(_ image: RGBImage) -> Tensor {
        let img = resized(image)
        let plane = img.width * img.height
        var out = Tensor(zeros: [3, img.height, img.width])
        let (scale, offset) = affine()
        out.withMutableFloats { dst in
            img.pixels.withUnsafeBufferPointer { src in
                for c in 0..<3 {
                    let (mode, a, b) = (scale.mode, offset[c], scale.values[c])
                    let base = c * plane
                    for p in 0..<plane {
                        let x = Float(src[p * 3 + c])
                        switch mode {
                        case .normalize: dst[base + p] = (x - a) / b
                        case .rescale: dst[base + p] = x * b
                        case .identity: dst[base + p] = x
                        }
                    }
                }
            }
        }
        return out
    }

    /// Batch of images: [N, 3, height, width].
    public func callAsFunction(_ images: [RGBImage]) -> Tensor {
        let size = outputSize
        precondition(config.doResize || images.allSatisfy { $0.width == size.width && $0.height == size.height },
                     "a batch without do_resize needs images of one size")
        let per = 3 * size.height * size.width
        var values = [Float]()
        values.reserveCapacity(images.count * per)
        for image in images { values += self(image).scalars }
        return Tensor(values, shape: [images.count, 3, size.height, size.width])
    }

    private enum Mode { case normalize, rescale, identity }

    /// Per-channel (subtrahend, divisor or factor), in the order and precision torchvision uses.
    private func affine() -> ((mode: Mode, values: [Float]), [Float]) {
        switch (config.doRescale, config.doNormalize) {
        case (true, true):
            // torch.tensor(mean) * (1.0 / rescale_factor): f32 tensor times a Python float.
            let inverse = Float(1.0 / config.rescaleFactor)
            return ((.normalize, config.imageStd.map { $0 * inverse }), config.imageMean.map { $0 * inverse })
        case (false, true):
            return ((.normalize, config.imageStd), config.imageMean)
        case (true, false):
            return ((.rescale, [Float](repeating: Float(config.rescaleFactor), count: 3)), [0, 0, 0])
        case (false, false):
            return ((.identity, [1, 1, 1]), [0, 0, 0])
        }
    }
}
