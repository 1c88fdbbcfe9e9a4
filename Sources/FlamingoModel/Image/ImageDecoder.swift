import CImageCodecs
import Foundation

// The only file that talks to libpng/libjpeg (through Sources/CImageCodecs/shim.h).

extension RGBImage {
    /// Decodes a PNG or JPEG held in memory. The format comes from the magic bytes.
    /// - Parameter name: names the data in error messages (a file name, a URL, a request id).
    public init(decoding data: Data, name: String = "<memory>", limits: ImageLimits = .default,
                alpha: AlphaHandling = .compositeOnWhite) throws {
        self = try ImageDecoder.decode(data, name: name, limits: limits, alpha: alpha)
    }

    /// Reads and decodes the PNG or JPEG file at `path`.
    public init(contentsOfFile path: String, limits: ImageLimits = .default,
                alpha: AlphaHandling = .compositeOnWhite) throws {
        let data: Data
        do {
            // Read, not mapped: a file truncated by another process while mapped would raise SIGBUS.
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ImageError.unreadable(file: path, reason: Self.reason(error))
        }
        self = try ImageDecoder.decode(data, name: path, limits: limits, alpha: alpha)
    }

    /// Reads and decodes the PNG or JPEG file at a file URL.
    public init(contentsOf url: URL, limits: ImageLimits = .default,
                alpha: AlphaHandling = .compositeOnWhite) throws {
        try self.init(contentsOfFile: url.path, limits: limits, alpha: alpha)
    }

    private static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError,
           underlying.domain == NSPOSIXErrorDomain, let code = POSIXErrorCode(rawValue: Int32(underlying.code)) {
            return String(cString: strerror(code.rawValue))
        }
        return ns.localizedDescription
    }
}

enum ImageDecoder {
    static func decode(_ data: Data, name: String, limits: ImageLimits, alpha: AlphaHandling) throws -> RGBImage {
        if data.isEmpty { throw ImageError.emptyFile(file: name) }
        guard let format = ImageFormat.sniff(data) else { throw ImageError.notAnImage(file: name) }
        guard format.isSupported else { throw ImageError.unsupportedFormat(file: name, format: format) }

        if format == .png, let (width, height) = pngHeaderSize(data), width == 0 || height == 0 {
            // libpng refuses a zero dimension as a generic IHDR error; report it as what it is.
            throw ImageError.zeroSize(file: name, width: width, height: height)
        }

        var raw = flamingo_image()
        let maxSide = UInt64(max(limits.maxSide, 0))
        let maxPixels = UInt64(max(limits.maxPixels, 0))
        let status: Int32 = data.withUnsafeBytes { buffer in
            let base = buffer.bindMemory(to: UInt8.self).baseAddress
            switch format {
            case .png: return flamingo_png_decode(base, buffer.count, maxSide, maxPixels, &raw)
            default: return flamingo_jpeg_decode(base, buffer.count, maxSide, maxPixels, &raw)
            }
        }
        defer { flamingo_image_free(&raw) }

        let message = withUnsafeBytes(of: raw.message) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let width = Int(raw.width), height = Int(raw.height)
        switch Int(status) {
        case Int(FLAMINGO_IMAGE_OK): break
        case Int(FLAMINGO_IMAGE_TRUNCATED):
            throw ImageError.truncated(file: name, format: format, detail: message)
        case Int(FLAMINGO_IMAGE_TOO_LARGE):
            throw ImageError.tooLarge(file: name, width: width, height: height, limits: limits)
        case Int(FLAMINGO_IMAGE_ZERO_SIZE):
            throw ImageError.zeroSize(file: name, width: width, height: height)
        case Int(FLAMINGO_IMAGE_UNSUPPORTED):
            throw ImageError.unsupportedPixelFormat(file: name, format: format, detail: message)
        case Int(FLAMINGO_IMAGE_NO_MEMORY):
            throw ImageError.outOfMemory(file: name)
        default:
            throw ImageError.corrupt(file: name, format: format, detail: message.isEmpty ? "decoder error" : message)
        }
        guard let pixels = raw.pixels, width > 0, height > 0 else {
            throw ImageError.corrupt(file: name, format: format, detail: "decoder returned no pixels")
        }

        let layout = SampleLayout(
            width: width, height: height, channels: Int(raw.channels), bitDepth: Int(raw.bit_depth),
            isGreySource: raw.grey_source != 0,
            colorKey: raw.has_key != 0 ? [raw.key.0, raw.key.1, raw.key.2] : nil)
        let byteCount = width * height * layout.channels * (layout.bitDepth / 8)
        let samples = UnsafeBufferPointer(start: pixels, count: byteCount)
        return RGBImage(width: width, height: height, pixels: layout.rgb(from: samples, alpha: alpha))
    }

    /// Width and height from the IHDR chunk, which the PNG format requires to come first.
    static func pngHeaderSize(_ data: Data) -> (Int, Int)? {
        let bytes = Array(data.prefix(24))
        guard bytes.count == 24, Array(bytes[12..<16]) == Array("IHDR".utf8) else { return nil }
        func be32(_ i: Int) -> Int { bytes[i..<i + 4].reduce(0) { $0 << 8 | Int($1) } }
        return (be32(16), be32(20))
    }
}
