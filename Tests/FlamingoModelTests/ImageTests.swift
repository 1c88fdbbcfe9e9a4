import FlamingoCore
import Foundation
import Testing

import FlamingoModel

// Goldens come from scripts/reference/make_image_fixtures.py: PIL's decode (after transformers'
// convert_to_rgb) and transformers' IdeficsImageProcessor pixel_values, in Tests/Fixtures/images.

// MARK: - Fixtures

enum ImageFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images")

    struct Manifest: Decodable {
        var versions: [String: String]
        var images: [Image]
        var bad: [Bad]
    }

    struct Image: Decodable, Sendable, CustomTestStringConvertible {
        var file: String
        var width: Int
        var height: Int
        var pil_mode: String
        var rgb_fnv1a64: String
        var drop_alpha_fnv1a64: String
        var rgb: String?
        var goldens: [Golden]
        var testDescription: String { "\(file) (\(pil_mode))" }
    }

    struct Golden: Decodable, Sendable {
        var size: Int
        var pixel_values: String
        var row_step: Int
        var sum: Double
        var pil_backend_max_abs_diff: Double
    }

    struct Bad: Decodable, Sendable, CustomTestStringConvertible {
        var file: String
        var error: String
        var format: String?
        var testDescription: String { "\(file) -> \(error)" }
    }

    struct GoldenCase: Sendable, CustomTestStringConvertible {
        var image: Image
        var golden: Golden
        var testDescription: String { "\(image.file) -> \(golden.size)x\(golden.size)" }
    }

    static let manifest: Manifest? = {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("manifest.json")) else { return nil }
        return try? JSONDecoder().decode(Manifest.self, from: data)
    }()

    static var images: [Image] { manifest?.images ?? [] }
    static var bad: [Bad] { manifest?.bad ?? [] }
    static var goldenCases: [GoldenCase] {
        images.flatMap { image in image.goldens.map { GoldenCase(image: image, golden: $0) } }
    }

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
}

/// A .npy array (format 1.x/2.x, C order, little-endian f4 or u1).
struct NPYArray {
    var shape: [Int]
    var floats: [Float] = []
    var bytes: [UInt8] = []

    init(contentsOfFile path: String) throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        struct BadNPY: Error { var reason: String }
        guard data.count > 10, data[0] == 0x93, Array(data[1..<6]) == Array("NUMPY".utf8) else {
            throw BadNPY(reason: "\(path): not a .npy file")
        }
        let major = data[6]
        let headerLength = major == 1 ? Int(data[8]) | Int(data[9]) << 8
            : Int(data[8]) | Int(data[9]) << 8 | Int(data[10]) << 16 | Int(data[11]) << 24
        let start = major == 1 ? 10 : 12
        let header = String(decoding: data[start..<start + headerLength], as: UTF8.self)
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw BadNPY(reason: "\(path): no shape in \(header)")
        }
        shape = header[open.upperBound..<close].split(separator: ",").compactMap {
            Int($0.trimmingCharacters(in: .whitespaces))
        }
        guard header.contains("'fortran_order': False") else { throw BadNPY(reason: "\(path): Fortran order") }
        let payload = Array(data[(start + headerLength)...])
        let count = shape.reduce(1, *)
        if header.contains("'descr': '<f4'") {
            guard payload.count == count * 4 else { throw BadNPY(reason: "\(path): size") }
            floats = (0..<count).map { i in
                Float(bitPattern: UInt32(payload[4 * i]) | UInt32(payload[4 * i + 1]) << 8
                    | UInt32(payload[4 * i + 2]) << 16 | UInt32(payload[4 * i + 3]) << 24)
            }
        } else if header.contains("'descr': '|u1'") {
            guard payload.count == count else { throw BadNPY(reason: "\(path): size") }
            bytes = payload
        } else {
            throw BadNPY(reason: "\(path): unsupported dtype in \(header)")
        }
    }
}

func fnv1a64(_ bytes: [UInt8]) -> String {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01B3
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

/// The case name of an ImageError, to compare with the manifest.
func kind(_ error: ImageError) -> String {
    switch error {
    case .unreadable: return "unreadable"
    case .emptyFile: return "emptyFile"
    case .notAnImage: return "notAnImage"
    case .unsupportedFormat: return "unsupportedFormat"
    case .unsupportedPixelFormat: return "unsupportedPixelFormat"
    case .truncated: return "truncated"
    case .corrupt: return "corrupt"
    case .zeroSize: return "zeroSize"
    case .tooLarge: return "tooLarge"
    case .outOfMemory: return "outOfMemory"
    }
}

// MARK: - Decoding

@Suite("Image decoding")
struct ImageDecodingTests {
    @Test func manifestLoads() throws {
        let manifest = try #require(ImageFixtures.manifest, "missing or unreadable \(ImageFixtures.directory.path)/manifest.json")
        #expect(manifest.images.count >= 15)
        #expect(manifest.bad.count >= 10)
    }

    @Test("decoded pixels equal PIL's (after convert_to_rgb)", arguments: ImageFixtures.images)
    func decodeMatchesPIL(_ fixture: ImageFixtures.Image) throws {
        let image = try RGBImage(contentsOfFile: ImageFixtures.path(fixture.file))
        #expect(image.width == fixture.width && image.height == fixture.height)
        if let raw = fixture.rgb {
            let golden = try NPYArray(contentsOfFile: ImageFixtures.path(raw))
            #expect(golden.shape == [fixture.height, fixture.width, 3])
            let differing = zip(image.pixels, golden.bytes).filter { $0 != $1 }.count
            let maxDiff = zip(image.pixels, golden.bytes).map { abs(Int($0) - Int($1)) }.max() ?? 0
            #expect(differing == 0, "\(fixture.file): \(differing) bytes differ from PIL, max diff \(maxDiff)")
        }
        #expect(fnv1a64(image.pixels) == fixture.rgb_fnv1a64, "\(fixture.file): hash differs from PIL's decode")
    }

    @Test("alpha dropped equals PIL convert(\"RGB\")", arguments: ImageFixtures.images)
    func discardAlphaMatchesPIL(_ fixture: ImageFixtures.Image) throws {
        let image = try RGBImage(contentsOfFile: ImageFixtures.path(fixture.file), alpha: .discard)
        #expect(fnv1a64(image.pixels) == fixture.drop_alpha_fnv1a64)
    }

    @Test("bad files give the right ImageError, naming the file", arguments: ImageFixtures.bad)
    func badFile(_ bad: ImageFixtures.Bad) throws {
        let path = ImageFixtures.path(bad.file)
        do {
            let image = try RGBImage(contentsOfFile: path)
            Issue.record("\(bad.file) decoded to \(image.width)x\(image.height), expected \(bad.error)")
        } catch let error as ImageError {
            #expect(kind(error) == bad.error, "\(bad.file): got \(error)")
            #expect(error.file == path)
            let message = error.localizedDescription
            #expect(message.contains(path), "message does not name the file: \(message)")
            if let format = bad.format {
                #expect(message.contains(format), "message does not name \(format): \(message)")
            }
        }
    }

    @Test func memoryDecodeEqualsFileDecode() throws {
        let path = ImageFixtures.path("rgba_64x48.png")
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(try RGBImage(decoding: data) == RGBImage(contentsOfFile: path))
        let jpeg = ImageFixtures.path("photo_80x60.jpg")
        #expect(try RGBImage(decoding: Data(contentsOf: URL(fileURLWithPath: jpeg))) == RGBImage(contentsOfFile: jpeg))
    }

    @Test func memoryErrorsUseTheGivenName() {
        #expect(throws: ImageError.notAnImage(file: "request-7/image-2")) {
            try RGBImage(decoding: Data("hello".utf8), name: "request-7/image-2")
        }
        #expect(throws: ImageError.emptyFile(file: "<memory>")) { try RGBImage(decoding: Data()) }
    }

    @Test func missingFileIsUnreadable() {
        let path = ImageFixtures.path("no_such_image.png")
        do {
            _ = try RGBImage(contentsOfFile: path)
            Issue.record("decoded a missing file")
        } catch let error as ImageError {
            #expect(kind(error) == "unreadable")
            #expect(error.localizedDescription.contains(path))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func limitsAreCheckedFromTheHeader() throws {
        let png = ImageFixtures.path("rgb_64x48.png")
        let jpeg = ImageFixtures.path("photo_80x60.jpg")
        let side = ImageLimits(maxSide: 63, maxPixels: 1_000_000)
        #expect(throws: ImageError.tooLarge(file: png, width: 64, height: 48, limits: side)) {
            try RGBImage(contentsOfFile: png, limits: side)
        }
        let area = ImageLimits(maxSide: 1000, maxPixels: 80 * 60 - 1)
        #expect(throws: ImageError.tooLarge(file: jpeg, width: 80, height: 60, limits: area)) {
            try RGBImage(contentsOfFile: jpeg, limits: area)
        }
        _ = try RGBImage(contentsOfFile: jpeg, limits: ImageLimits(maxSide: 80, maxPixels: 80 * 60))
    }

    @Test func truncatedAtEveryLengthNeverCrashesOrReturnsPartialPixels() throws {
        for name in ["rgb_64x48.png", "progressive_64x40.jpg", "photo_80x60.jpg"] {
            let data = try Data(contentsOf: URL(fileURLWithPath: ImageFixtures.path(name)))
            let full = try RGBImage(decoding: data)
            for length in stride(from: 0, to: data.count, by: max(1, data.count / 97)) {
                do {
                    let image = try RGBImage(decoding: data.prefix(length), name: name)
                    // Only a cut inside trailing metadata may still decode, and then completely.
                    #expect(image == full, "\(name) cut at \(length) decoded to different pixels")
                } catch is ImageError {
                }
            }
        }
    }

    @Test func formatIsSniffedFromMagicBytes() {
        #expect(ImageFormat.sniff([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) == .png)
        #expect(ImageFormat.sniff([0xFF, 0xD8, 0xFF, 0xE0]) == .jpeg)
        #expect(ImageFormat.sniff(Array("GIF89a".utf8)) == .gif)
        #expect(ImageFormat.sniff(Array("RIFF\0\0\0\0WEBPVP8 ".utf8)) == .webp)
        #expect(ImageFormat.sniff(Array("%PDF-1.4".utf8)) == nil)
        #expect(ImageFormat.sniff([UInt8]()) == nil)
    }

    @Test func compositeOnWhiteEndpoints() {
        for v in 0...255 {
            #expect(compositeOnWhite(UInt8(v), alpha: 255) == UInt8(v))
            #expect(compositeOnWhite(UInt8(v), alpha: 0) == 255)
        }
        #expect(compositeOnWhite(0, alpha: 128) == 127)  // PIL rounds 255 * 127 / 255
    }
}

// MARK: - Preprocessing

@Suite("IDEFICS image preprocessing")
struct ImagePreprocessingTests {
    /// Tolerance on normalised pixel values; the resize is meant to be bit-exact, so the real
    /// difference is float rounding only.
    static let tolerance: Float = 1e-4

    @Test("pixel_values match transformers' IdeficsImageProcessor", arguments: ImageFixtures.goldenCases)
    func matchesGolden(_ c: ImageFixtures.GoldenCase) throws {
        let image = try RGBImage(contentsOfFile: ImageFixtures.path(c.image.file))
        let preprocess = ImagePreprocessor(config: PreprocessorConfig(imageSize: c.golden.size))
        let output = preprocess(image)
        let size = c.golden.size
        #expect(output.shape == [3, size, size])
        let values = output.scalars

        let golden = try NPYArray(contentsOfFile: ImageFixtures.path(c.golden.pixel_values))
        let rows = Array(stride(from: 0, to: size, by: c.golden.row_step))
        #expect(golden.shape == [3, rows.count, size])
        var maxDiff: Float = 0
        var worst = (0, 0, 0)
        for ch in 0..<3 {
            for (r, y) in rows.enumerated() {
                for x in 0..<size {
                    let d = abs(values[(ch * size + y) * size + x] - golden.floats[(ch * rows.count + r) * size + x])
                    if d > maxDiff { maxDiff = d; worst = (ch, y, x) }
                }
            }
        }
        let sum = values.reduce(0.0) { $0 + Double($1) }
        print("[ImageTests] \(c.image.file) -> \(size): max |diff| \(maxDiff) over \(3 * rows.count * size) values; "
            + "sum diff \(abs(sum - c.golden.sum)); transformers' PIL backend differs by \(c.golden.pil_backend_max_abs_diff)")
        #expect(maxDiff <= Self.tolerance, "\(c.image.file): max diff \(maxDiff) at channel/y/x \(worst)")
        #expect(abs(sum - c.golden.sum) <= 1e-6 * Double(values.count) + 1e-3)
    }

    @Test func imageAtTargetSizeIsNotResampled() throws {
        let image = try RGBImage(contentsOfFile: ImageFixtures.path("rgb_32x32.png"))
        #expect(ImagePreprocessor(config: PreprocessorConfig(imageSize: 32)).resized(image) == image)
    }

    @Test func batchStacksImages() throws {
        let a = try RGBImage(contentsOfFile: ImageFixtures.path("rgb_64x48.png"))
        let b = try RGBImage(contentsOfFile: ImageFixtures.path("grey_20x30.png"))
        let preprocess = ImagePreprocessor(config: PreprocessorConfig(imageSize: 32))
        let batch = preprocess([a, b])
        #expect(batch.shape == [2, 3, 32, 32])
        #expect(Array(batch.scalars[3072...]) == preprocess(b).scalars)
    }

    @Test func constantImageStaysConstant() {
        // Weights are normalised, so a flat image resizes to the same flat image at any scale.
        for (w, h) in [(1, 1), (3, 700), (1024, 1024), (100, 7)] {
            let flat = RGBImage(width: w, height: h, pixels: [UInt8](repeating: 0, count: w * h * 3).enumerated().map {
                [200, 17, 255][$0.offset % 3]
            })
            let out = ImagePreprocessor(config: PreprocessorConfig(imageSize: 224)).resized(flat)
            #expect(out.pixels == [UInt8](repeating: 0, count: 224 * 224 * 3).enumerated().map { [200, 17, 255][$0.offset % 3] })
        }
    }

    @Test func largeImageResizesInReasonableTime() {
        // 1024x1024 -> 224, the common case for real photos; timed for information only.
        let side = 1024
        var pixels = [UInt8](repeating: 0, count: side * side * 3)
        for i in 0..<pixels.count { pixels[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }
        let image = RGBImage(width: side, height: side, pixels: pixels)
        let preprocess = ImagePreprocessor()
        let clock = ContinuousClock()
        var output = Tensor(zeros: [1])
        let elapsed = clock.measure { output = preprocess(image) }
        print("[ImageTests] 1024x1024 -> 224 preprocess: \(elapsed)")
        #expect(output.shape == [3, 224, 224])
        #expect(output.scalars.allSatisfy { $0.isFinite && abs($0) < 3 })
    }

    @Test func resamplerPrecisionMatchesTorchRule() {
        // 2 * max weight must fit in 15 bits at the chosen precision, and not at the next one.
        for (input, output) in [(64, 32), (20, 32), (224, 32), (1024, 224), (300, 224), (5, 224)] {
            let taps = BicubicResampler.Taps(inSize: input, outSize: output)
            let maxWeight = taps.weights.max() ?? 0
            #expect(maxWeight > 0 && maxWeight < 1 << 15)
            #expect(taps.precision > 0 && taps.precision <= 22)
            for i in 0..<output {
                let row = taps.weights[i * taps.stride..<i * taps.stride + taps.count[i]]
                let sum = row.reduce(0, +)
                #expect(abs(Int(sum) - (1 << taps.precision)) <= taps.count[i], "weights of output \(i) sum to \(sum)")
                #expect(taps.start[i] >= 0 && taps.start[i] + taps.count[i] <= input)
            }
        }
    }
}

// MARK: - Configuration

@Suite("preprocessor_config.json")
struct PreprocessorConfigTests {
    func decode(_ json: String) throws -> PreprocessorConfig {
        try JSONDecoder().decode(PreprocessorConfig.self, from: Data(json.utf8))
    }

    @Test func idefics9bConfig() throws {
        let config = try decode("""
        {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_num_channels": 3,
         "image_processor_type": "IdeficsImageProcessor", "image_size": 224,
         "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "IdeficsProcessor"}
        """)
        #expect(config == PreprocessorConfig())
        #expect(config.imageSize == 224)
    }

    @Test func defaultsAndSizeDictionary() throws {
        #expect(try decode("{}") == PreprocessorConfig())
        let sized = try decode(#"{"size": {"height": 32, "width": 32}, "do_normalize": false}"#)
        #expect(sized.height == 32 && sized.width == 32 && !sized.doNormalize)
        // image_size wins over size, as in IdeficsImageProcessor.__init__.
        #expect(try decode(#"{"image_size": 64, "size": {"height": 32, "width": 32}}"#).imageSize == 64)
    }

    @Test func invalidConfigsAreRejected() {
        for json in [
            #"{"image_mean": [0.5, 0.5]}"#,
            #"{"image_std": [0.5, 0, 0.5]}"#,
            #"{"image_num_channels": 1}"#,
            #"{"image_size": 0}"#,
            #"{"resample": 2}"#,
            #"{"size": {"shortest_edge": 224}}"#,
        ] {
            #expect(throws: DecodingError.self, "\(json)") { try decode(json) }
        }
    }

    @Test func roundTripsAndLoadsFromFile() throws {
        let config = PreprocessorConfig(imageSize: 32, imageMean: [0.5, 0.5, 0.5], imageStd: [0.25, 0.5, 1])
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("flamingo-preprocessor-\(UUID().uuidString).json")
        try JSONEncoder().encode(config).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(try PreprocessorConfig(contentsOf: url) == config)
    }

    @Test func rescaleOnlyAndIdentity() throws {
        let image = RGBImage(width: 1, height: 1, pixels: [0, 128, 255])
        var config = PreprocessorConfig(imageSize: 1)
        config.doNormalize = false
        #expect(ImagePreprocessor(config: config)(image).scalars == [0, Float(128) * Float(1.0 / 255.0), Float(255) * Float(1.0 / 255.0)])
        config.doRescale = false
        #expect(ImagePreprocessor(config: config)(image).scalars == [0, 128, 255])
    }
}
