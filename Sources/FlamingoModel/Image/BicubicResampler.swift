/// Antialiased bicubic resize of 8-bit RGB, bit-exact with what transformers' default
/// `IdeficsImageProcessor` (torchvision backend) computes.
///
/// That processor calls `torchvision.transforms.v2.functional.resize(uint8, BICUBIC, antialias=True)`,
/// which on CPU keeps the uint8 tensor and runs PyTorch's native `_upsample_bicubic2d_aa` for uint8
/// (aten/src/ATen/native/cpu/UpSampleKernel.cpp: `_compute_index_ranges_int16_weights`,
/// `basic_loop_aa_horizontal<uint8_t>` / `basic_loop_aa_vertical<uint8_t>`, and the AVX2 port of
/// Pillow-SIMD with the same arithmetic). It is Pillow's separable filter — Keys cubic with
/// a = -0.5, support widened by the scale factor when downscaling — with these details:
///
/// - per output index i: center = scale * (i + 0.5), scale = inSize / outSize (double),
///   support = 2 * max(scale, 1), xmin = max(trunc(center - support + 0.5), 0),
///   count = min(trunc(center + support + 0.5), inSize) - xmin,
///   w_j = cubic((j + xmin - center + 0.5) / max(scale, 1)), normalised by their sum;
/// - weights become int16 with `precision` fraction bits, the largest precision < 22 for which
///   2 * max(w) still fits in 15 bits, rounded half away from zero (Pillow uses a fixed 22 bits,
///   which is why transformers' PIL backend differs by +-1 on a few pixels);
/// - each output = clamp((2^(precision-1) + sum(w_j * x_j)) >> precision, 0, 255);
/// - horizontal pass first, rounded and clamped to uint8, then the vertical pass; a pass whose
///   size does not change is skipped (so an image already at the target size is returned as is).
public struct BicubicResampler: Sendable {
    /// Precomputed taps for one axis: output i reads `count[i]` inputs from `start[i]`.
    public struct Taps: Sendable {
        public var start: [Int]
        public var count: [Int]
        /// `outSize * stride` weights, row i at `i * stride`.
        public var weights: [Int32]
        public var stride: Int
        public var precision: Int

        public init(inSize: Int, outSize: Int) {
            precondition(inSize > 0 && outSize > 0)
            let scale = Double(inSize) / Double(outSize)
            let filterScale = max(scale, 1.0)
            let support = 2.0 * filterScale
            let invScale = 1.0 / filterScale
            stride = Int(support.rounded(.up)) * 2 + 1
            start = [Int](repeating: 0, count: outSize)
            count = [Int](repeating: 0, count: outSize)
            var real = [Double](repeating: 0, count: outSize * stride)
            for i in 0..<outSize {
                let center = scale * (Double(i) + 0.5)
                let xmin = max(Int(center - support + 0.5), 0)
                let n = min(min(Int(center + support + 0.5), inSize) - xmin, stride)
                var total = 0.0
                for j in 0..<max(n, 0) {
                    let w = Self.cubic((Double(j + xmin) - center + 0.5) * invScale)
                    real[i * stride + j] = w
                    total += w
                }
                if total != 0 {
                    for j in 0..<max(n, 0) { real[i * stride + j] /= total }
                }
                start[i] = xmin
                count[i] = max(n, 0)
            }
            let wMax = real.max() ?? 0
            var p = 0
            while p < 22 {
                if Int(0.5 + wMax * Double(1 << (p + 1))) >= (1 << 15) { break }
                p += 1
            }
            precision = p
            let unit = Double(1 << p)
            weights = real.map { v in Int32(v < 0 ? Int(-0.5 + v * unit) : Int(0.5 + v * unit)) }
        }

        /// Keys' cubic convolution kernel with a = -0.5 (Pillow's and PyTorch's `bicubic_filter`).
        static func cubic(_ t: Double) -> Double {
            let a = -0.5
            let x = abs(t)
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }

    let horizontal: Taps?
    let vertical: Taps?
    let inWidth: Int, inHeight: Int, outWidth: Int, outHeight: Int

    /// Weights for resizing `inWidth x inHeight` to `outWidth x outHeight`; reusable for any
    /// number of images of that size.
    init(inWidth: Int, inHeight: Int, outWidth: Int, outHeight: Int) {
        self.inWidth = inWidth; self.inHeight = inHeight
        self.outWidth = outWidth; self.outHeight = outHeight
        horizontal = inWidth == outWidth ? nil : Taps(inSize: inWidth, outSize: outWidth)
        vertical = inHeight == outHeight ? nil : Taps(inSize: inHeight, outSize: outHeight)
    }

    func callAsFunction(_ image: RGBImage) -> RGBImage {
        precondition(image.width == inWidth && image.height == inHeight, "resampler built for another size")
        var pixels = image.pixels
        var width = image.width
        if let taps = horizontal {
            pixels = Self.resampleRows(pixels, width: width, height: inHeight, taps: taps, outWidth: outWidth)
            width = outWidth
        }
        if let taps = vertical {
            pixels = Self.resampleColumns(pixels, width: width, outHeight: outHeight, taps: taps)
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: pixels)
    }

    /// x: [height, width, 3] -> [height, outWidth, 3]
    static func resampleRows(_ src: [UInt8], width: Int, height: Int, taps: Taps, outWidth: Int) -> [UInt8] {
        var dst = [UInt8](repeating: 0, count: height * outWidth * 3)
        let half = Int32(1) << Int32(taps.precision - 1)
        let shift = Int32(taps.precision)
        src.withUnsafeBufferPointer { s in
            taps.weights.withUnsafeBufferPointer { w in
                dst.withUnsafeMutableBufferPointer { d in
                    for y in 0..<height {
                        let row = y * width * 3
                        let outRow = y * outWidth * 3
                        for x in 0..<outWidth {
                            var r = half, g = half, b = half
                            let k = x * taps.stride
                            var i = row + taps.start[x] * 3
                            for j in 0..<taps.count[x] {
                                let wj = w[k + j]
                                r &+= Int32(s[i]) &* wj
                                g &+= Int32(s[i + 1]) &* wj
                                b &+= Int32(s[i + 2]) &* wj
                                i += 3
                            }
                            d[outRow + x * 3] = clip8(r >> shift)
                            d[outRow + x * 3 + 1] = clip8(g >> shift)
                            d[outRow + x * 3 + 2] = clip8(b >> shift)
                        }
                    }
                }
            }
        }
        return dst
    }

    /// x: [height, width, 3] -> [outHeight, width, 3]
    static func resampleColumns(_ src: [UInt8], width: Int, outHeight: Int, taps: Taps) -> [UInt8] {
        let rowLength = width * 3
        var dst = [UInt8](repeating: 0, count: outHeight * rowLength)
        var acc = [Int32](repeating: 0, count: rowLength)
        let half = Int32(1) << Int32(taps.precision - 1)
        let shift = Int32(taps.precision)
        src.withUnsafeBufferPointer { s in
            acc.withUnsafeMutableBufferPointer { a in
                dst.withUnsafeMutableBufferPointer { d in
                    for y in 0..<outHeight {
                        for i in 0..<rowLength { a[i] = half }
                        // Row-at-a-time accumulation: the inner loop is contiguous and vectorises.
                        for j in 0..<taps.count[y] {
                            let wj = taps.weights[y * taps.stride + j]
                            let row = (taps.start[y] + j) * rowLength
                            for i in 0..<rowLength { a[i] &+= Int32(s[row + i]) &* wj }
                        }
                        let out = y * rowLength
                        for i in 0..<rowLength { d[out + i] = clip8(a[i] >> shift) }
                    }
                }
            }
        }
        return dst
    }

    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 { UInt8(truncatingIfNeeded: min(max(v, 0), 255)) }
}
