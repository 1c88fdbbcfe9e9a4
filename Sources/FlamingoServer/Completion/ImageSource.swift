import FlamingoModel
import Foundation

/// Fetches and decodes the image of an `image_url` part: a `data:` URL with base64 PNG or JPEG
/// bytes, or, only when the operator allowed it (`--allow-local-files`), a `file://` URL of a file
/// on the server. Remote URLs are never fetched.
public struct ImageSource: Sendable {
    public var allowLocalFiles: Bool
    /// Largest decoded image (checked from the header, before pixels are allocated).
    public var limits: ImageLimits

    public init(allowLocalFiles: Bool = false, limits: ImageLimits = .default) {
        self.allowLocalFiles = allowLocalFiles
        self.limits = limits
    }

    /// - Parameter param: the part's path in the request, for error messages.
    public func image(url: String, param: String) throws -> RGBImage {
        let data = try bytes(url: url, param: param)
        do {
            return try RGBImage(decoding: data, name: param, limits: limits)
        } catch let error as ImageError {
            if case .tooLarge = error {
                throw APIError(status: .badRequest, message: error.localizedDescription, param: param,
                               code: "image_too_large")
            }
            throw APIError(status: .badRequest, message: "Invalid image: \(error.localizedDescription)", param: param,
                           code: "invalid_image")
        }
    }

    /// The encoded image bytes a URL names.
    public func bytes(url: String, param: String) throws -> Data {
        if url.hasPrefix("data:") { return try Self.decodeDataURL(url, param: param) }
        if url.hasPrefix("file:") {
            guard allowLocalFiles else {
                throw APIError(status: .badRequest,
                               message: "file:// image URLs are disabled on this server (start it with --allow-local-files to allow them).",
                               param: param, code: "invalid_image_url")
            }
            guard let parsed = URL(string: url), parsed.isFileURL, parsed.path.hasPrefix("/") else {
                throw APIError(status: .badRequest, message: "Invalid file URL: give an absolute path (file:///path/to/image.png).",
                               param: param, code: "invalid_image_url")
            }
            do {
                return try Data(contentsOf: parsed)
            } catch {
                throw APIError(status: .badRequest, message: "Cannot read \(parsed.path).", param: param,
                               code: "invalid_image_url")
            }
        }
        throw APIError(status: .badRequest,
                       message: "Only data: URLs with base64 PNG or JPEG images are supported\(allowLocalFiles ? " (and file:// URLs)" : ""); this server does not fetch remote images.",
                       param: param, code: "invalid_image_url")
    }

    /// `data:[<media type>][;base64],<data>`: only base64 images.
    static func decodeDataURL(_ url: String, param: String) throws -> Data {
        guard let comma = url.firstIndex(of: ",") else {
            throw APIError(status: .badRequest, message: "Invalid data URL: no ',' before the data.", param: param,
                           code: "invalid_image_url")
        }
        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma].lowercased()
        let attributes = header.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard attributes.contains("base64") else {
            throw APIError(status: .badRequest, message: "Invalid data URL: only base64 data is supported (data:image/png;base64,...).",
                           param: param, code: "invalid_image_url")
        }
        if let mediaType = attributes.first, mediaType != "base64", !mediaType.isEmpty, !mediaType.hasPrefix("image/") {
            throw APIError(status: .badRequest,
                           message: "Invalid data URL: media type '\(mediaType)' is not an image type.", param: param,
                           code: "invalid_image")
        }
        // Line breaks and spaces are allowed inside base64 (MIME wraps lines); nothing else is.
        var payload = String(url[url.index(after: comma)...])
        let whitespace: Set<Unicode.Scalar> = ["\n", "\r", " ", "\t"]
        if payload.unicodeScalars.contains(where: whitespace.contains) {
            payload = String(String.UnicodeScalarView(payload.unicodeScalars.filter { !whitespace.contains($0) }))
        }
        guard let data = Data(base64Encoded: payload) else {
            throw APIError(status: .badRequest, message: "Invalid base64 data in the image URL.", param: param,
                           code: "invalid_base64")
        }
        return data
    }
}
