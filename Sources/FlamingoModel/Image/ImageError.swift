import Foundation

/// Container formats recognised from their first bytes.
public enum ImageFormat: String, Sendable, Equatable {
    case png = "PNG"
    case jpeg = "JPEG"
    case gif = "GIF"
    case webp = "WebP"
    case bmp = "BMP"
    case tiff = "TIFF"
    case heif = "HEIF/AVIF"

    /// Formats this build can decode.
    public var isSupported: Bool { self == .png || self == .jpeg }

    /// The format announced by the magic bytes at the start of `data`, or nil for none known.
    /// The file name's extension is never consulted.
    public static func sniff<D: Collection<UInt8>>(_ data: D) -> ImageFormat? {
        let head = Array(data.prefix(12))
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            head.count >= offset + magic.count && Array(head[offset..<offset + magic.count]) == magic
        }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return .gif }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return .webp }
        if starts(Array("BM".utf8)) { return .bmp }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        if starts(Array("ftyp".utf8), at: 4) { return .heif }
        return nil
    }
}

/// Why an image could not be decoded. Every case names the file (or the caller's label for
/// in-memory data) so that a failing request in a batch of many images can be traced.
public enum ImageError: Error, LocalizedError, Equatable {
    /// The file could not be read at all (missing, a directory, no permission).
    case unreadable(file: String, reason: String)
    /// Zero bytes.
    case emptyFile(file: String)
    /// The bytes are not any image format we know (e.g. a text file named .png).
    case notAnImage(file: String)
    /// A known image format this build does not decode (GIF, WebP, ...).
    case unsupportedFormat(file: String, format: ImageFormat)
    /// A PNG/JPEG whose pixel layout we do not convert (e.g. CMYK JPEG).
    case unsupportedPixelFormat(file: String, format: ImageFormat, detail: String)
    /// The data ends before the image does.
    case truncated(file: String, format: ImageFormat, detail: String)
    /// The codec rejected the data.
    case corrupt(file: String, format: ImageFormat, detail: String)
    /// The header declares a width or height of zero.
    case zeroSize(file: String, width: Int, height: Int)
    /// The header declares dimensions over the limits.
    case tooLarge(file: String, width: Int, height: Int, limits: ImageLimits)
    /// Pixel memory could not be allocated.
    case outOfMemory(file: String)

    public var file: String {
        switch self {
        case .unreadable(let f, _), .emptyFile(let f), .notAnImage(let f), .unsupportedFormat(let f, _),
             .unsupportedPixelFormat(let f, _, _), .truncated(let f, _, _), .corrupt(let f, _, _),
             .zeroSize(let f, _, _), .tooLarge(let f, _, _, _), .outOfMemory(let f):
            return f
        }
    }

    public var errorDescription: String? {
        switch self {
        case .unreadable(let file, let reason):
            return "\(file): cannot read image file: \(reason)"
        case .emptyFile(let file):
            return "\(file): not an image: the file is empty"
        case .notAnImage(let file):
            return "\(file): not an image: unknown format (expected PNG or JPEG data; the file name is not consulted)"
        case .unsupportedFormat(let file, let format):
            return "\(file): unsupported image format \(format.rawValue) (supported: PNG, JPEG)"
        case .unsupportedPixelFormat(let file, let format, let detail):
            return "\(file): unsupported \(format.rawValue) pixel format: \(detail)"
        case .truncated(let file, let format, let detail):
            return "\(file): truncated \(format.rawValue) file: \(detail)"
        case .corrupt(let file, let format, let detail):
            return "\(file): corrupt \(format.rawValue) file: \(detail)"
        case .zeroSize(let file, let width, let height):
            return "\(file): image has zero size (\(width)x\(height))"
        case .tooLarge(let file, let width, let height, let limits):
            return "\(file): image is \(width)x\(height), over the limit of \(limits)"
        case .outOfMemory(let file):
            return "\(file): out of memory while decoding"
        }
    }
}
