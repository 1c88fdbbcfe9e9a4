import Foundation

/// `preprocessor_config.json` of an IDEFICS checkpoint: what `IdeficsImageProcessor` reads.
///
/// IDEFICS checkpoints write `image_size`, `image_mean`, `image_std`, `image_num_channels`;
/// transformers 5.x may also write `size: {height, width}`, `do_*` switches, `rescale_factor` and
/// `resample`. Missing keys take transformers' class defaults (224, OpenAI CLIP mean/std, BICUBIC).
public struct PreprocessorConfig: Codable, Sendable, Equatable {
    /// Output height and width in pixels.
    public var height: Int
    public var width: Int
    public var imageMean: [Float]
    public var imageStd: [Float]
    public var imageNumChannels: Int
    public var rescaleFactor: Double
    public var doResize: Bool
    public var doRescale: Bool
    public var doNormalize: Bool
    public var doConvertRGB: Bool
    /// PIL resampling id; only 3 (BICUBIC), the IDEFICS value, is implemented.
    public var resample: Int

    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]
    public static let bicubic = 3

    /// The output side when `height == width`, as `image_size` in the JSON.
    public var imageSize: Int { height }

    public init(imageSize: Int = 224, imageMean: [Float] = clipMean, imageStd: [Float] = clipStd,
                imageNumChannels: Int = 3, rescaleFactor: Double = 1.0 / 255.0,
                doResize: Bool = true, doRescale: Bool = true, doNormalize: Bool = true,
                doConvertRGB: Bool = true, resample: Int = bicubic) {
        self.height = imageSize
        self.width = imageSize
        self.imageMean = imageMean
        self.imageStd = imageStd
        self.imageNumChannels = imageNumChannels
        self.rescaleFactor = rescaleFactor
        self.doResize = doResize
        self.doRescale = doRescale
        self.doNormalize = doNormalize
        self.doConvertRGB = doConvertRGB
        self.resample = resample
    }

    /// Reads and validates a `preprocessor_config.json`.
    public init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url)
        self = try JSONDecoder().decode(PreprocessorConfig.self, from: data)
    }

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size"
        case size
        case imageMean = "image_mean"
        case imageStd = "image_std"
        case imageNumChannels = "image_num_channels"
        case rescaleFactor = "rescale_factor"
        case doResize = "do_resize"
        case doRescale = "do_rescale"
        case doNormalize = "do_normalize"
        case doConvertRGB = "do_convert_rgb"
        case resample
    }

    struct Size: Codable, Equatable {
        var height: Int?
        var width: Int?
        var shortestEdge: Int?
        var longestEdge: Int?
        enum CodingKeys: String, CodingKey {
            case height, width
            case shortestEdge = "shortest_edge"
            case longestEdge = "longest_edge"
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // `image_size` wins over `size`, as in IdeficsImageProcessor.__init__.
        if let side = try c.decodeIfPresent(Int.self, forKey: .imageSize) {
            height = side
            width = side
        } else if let size = try c.decodeIfPresent(Size.self, forKey: .size) {
            guard let h = size.height, let w = size.width else {
                throw DecodingError.dataCorruptedError(
                    forKey: .size, in: c,
                    debugDescription: "size must give height and width (shortest_edge/longest_edge resizing is not IDEFICS')")
            }
            height = h
            width = w
        } else {
            height = 224
            width = 224
        }
        imageMean = try c.decodeIfPresent([Float].self, forKey: .imageMean) ?? Self.clipMean
        imageStd = try c.decodeIfPresent([Float].self, forKey: .imageStd) ?? Self.clipStd
        imageNumChannels = try c.decodeIfPresent(Int.self, forKey: .imageNumChannels) ?? 3
        rescaleFactor = try c.decodeIfPresent(Double.self, forKey: .rescaleFactor) ?? 1.0 / 255.0
        doResize = try c.decodeIfPresent(Bool.self, forKey: .doResize) ?? true
        doRescale = try c.decodeIfPresent(Bool.self, forKey: .doRescale) ?? true
        doNormalize = try c.decodeIfPresent(Bool.self, forKey: .doNormalize) ?? true
        doConvertRGB = try c.decodeIfPresent(Bool.self, forKey: .doConvertRGB) ?? true
        resample = try c.decodeIfPresent(Int.self, forKey: .resample) ?? Self.bicubic

        guard height > 0, width > 0, height <= 16_384, width <= 16_384 else {
            throw DecodingError.dataCorruptedError(
                forKey: .imageSize, in: c, debugDescription: "image size \(height)x\(width) must be in 1...16384")
        }
        guard imageNumChannels == 3 else {
            throw DecodingError.dataCorruptedError(
                forKey: .imageNumChannels, in: c, debugDescription: "image_num_channels \(imageNumChannels): only 3 (RGB) is supported")
        }
        guard imageMean.count == imageNumChannels else {
            throw DecodingError.dataCorruptedError(
                forKey: .imageMean, in: c, debugDescription: "image_mean has \(imageMean.count) values, expected \(imageNumChannels)")
        }
        guard imageStd.count == imageNumChannels, imageStd.allSatisfy({ $0 != 0 && $0.isFinite }) else {
            throw DecodingError.dataCorruptedError(
                forKey: .imageStd, in: c, debugDescription: "image_std must have \(imageNumChannels) finite non-zero values, got \(imageStd)")
        }
        guard rescaleFactor > 0, rescaleFactor.isFinite else {
            throw DecodingError.dataCorruptedError(
                forKey: .rescaleFactor, in: c, debugDescription: "rescale_factor \(rescaleFactor) must be positive")
        }
        guard resample == Self.bicubic else {
            throw DecodingError.dataCorruptedError(
                forKey: .resample, in: c, debugDescription: "resample \(resample): only 3 (BICUBIC) is implemented")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if height == width { try c.encode(height, forKey: .imageSize) }
        try c.encode(Size(height: height, width: width), forKey: .size)
        try c.encode(imageMean, forKey: .imageMean)
        try c.encode(imageStd, forKey: .imageStd)
        try c.encode(imageNumChannels, forKey: .imageNumChannels)
        try c.encode(rescaleFactor, forKey: .rescaleFactor)
        try c.encode(doResize, forKey: .doResize)
        try c.encode(doRescale, forKey: .doRescale)
        try c.encode(doNormalize, forKey: .doNormalize)
        try c.encode(doConvertRGB, forKey: .doConvertRGB)
        try c.encode(resample, forKey: .resample)
    }
}
