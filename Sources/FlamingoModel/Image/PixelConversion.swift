/// How a codec laid out the samples it decoded, and the conversion of those samples to 8-bit RGB
/// exactly as PIL does it (`PIL.Image.open(f)` then transformers' `convert_to_rgb`, or
/// `convert("RGB")` for `AlphaHandling.discard`).
///
/// PIL's rules, checked against Pillow 13:
/// - 16-bit colour and grey+alpha keep the high byte of each sample (rawmodes `RGB;16B`,
///   `RGBA;16B`, `LA;16B`).
/// - 16-bit grey without alpha opens as mode `I;16`, and `convert("RGB")` *clips* it to 0...255
///   (it does not scale): any value >= 255 becomes white. A tRNS key on it is ignored.
/// - A 16-bit RGB tRNS key is compared with the 8-bit (high byte) pixel, so it only matches
///   when every key component is <= 255.
/// - Transparency is composited onto white with PIL's integer `alpha_composite`.
struct SampleLayout {
    var width: Int
    var height: Int
    /// 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
    var channels: Int
    /// 8 or 16; 16-bit samples are big-endian.
    var bitDepth: Int
    var isGreySource: Bool
    /// A 16-bit PNG tRNS colour key (grey in element 0), not yet applied.
    var colorKey: [UInt16]?

    func rgb(from samples: UnsafeBufferPointer<UInt8>, alpha: AlphaHandling) -> [UInt8] {
        let pixelCount = width * height
        let bytesPerSample = bitDepth / 8
        precondition(samples.count == pixelCount * channels * bytesPerSample, "sample buffer size")
        let composite = alpha == .compositeOnWhite

        // Reads sample `s` of pixel `p` reduced to 8 bits.
        let wide = bitDepth == 16
        let clipGrey16 = wide && channels == 1
        @inline(__always) func sample(_ p: Int, _ s: Int) -> UInt8 {
            let i = (p * channels + s) * bytesPerSample
            if !wide { return samples[i] }
            if clipGrey16 { return UInt8(min(Int(samples[i]) << 8 | Int(samples[i + 1]), 255)) }
            return samples[i]
        }
        // A 16-bit RGB key as PIL applies it: against the 8-bit pixel, each component <= 255.
        var key8: (UInt8, UInt8, UInt8)?
        if composite, wide, channels == 3, let key = colorKey, key.count == 3, key.allSatisfy({ $0 <= 255 }) {
            key8 = (UInt8(key[0]), UInt8(key[1]), UInt8(key[2]))
        }

        var out = [UInt8](repeating: 0, count: pixelCount * 3)
        out.withUnsafeMutableBufferPointer { dst in
            for p in 0..<pixelCount {
                let o = p * 3
                switch channels {
                case 1:
                    let v = sample(p, 0)
                    dst[o] = v; dst[o + 1] = v; dst[o + 2] = v
                case 2:
                    let v = sample(p, 0)
                    let a = composite ? sample(p, 1) : 255
                    let c = compositeOnWhite(v, alpha: a)
                    dst[o] = c; dst[o + 1] = c; dst[o + 2] = c
                case 3:
                    let r = sample(p, 0), g = sample(p, 1), b = sample(p, 2)
                    if let k = key8, r == k.0, g == k.1, b == k.2 {
                        dst[o] = 255; dst[o + 1] = 255; dst[o + 2] = 255
                    } else {
                        dst[o] = r; dst[o + 1] = g; dst[o + 2] = b
                    }
                default:
                    let a = composite ? sample(p, 3) : 255
                    dst[o] = compositeOnWhite(sample(p, 0), alpha: a)
                    dst[o + 1] = compositeOnWhite(sample(p, 1), alpha: a)
                    dst[o + 2] = compositeOnWhite(sample(p, 2), alpha: a)
                }
            }
        }
        return out
    }
}

/// One channel of `PIL.Image.alpha_composite(white, pixel)` (Pillow src/libImaging/AlphaComposite.c,
/// 7 extra bits of precision, rounded divisions by 255), specialised to an opaque white backdrop.
@inline(__always)
public func compositeOnWhite(_ value: UInt8, alpha: UInt8) -> UInt8 {
    if alpha == 255 { return value }
    if alpha == 0 { return 255 }
    let precisionBits: UInt32 = 7
    let a = UInt32(alpha)
    let outA255: UInt32 = a * 255 + 255 * (255 - a)  // = 255 * 255: the backdrop is opaque
    let coef1 = a * 255 * 255 * (1 << precisionBits) / outA255
    let coef2 = 255 * (1 << precisionBits) - coef1
    let t = UInt32(value) * coef1 + 255 * coef2 + (0x80 << precisionBits)
    return UInt8(truncatingIfNeeded: (((t >> 8) + t) >> 8) >> precisionBits)
}
