import FlamingoCore
import Foundation
import Testing
import FlamingoModel

// The bytes entry points the fuzz targets drive (Fuzz/Targets), and the inputs the fuzzers found
// (each also in Fuzz/corpus/TARGET): every one must be a clear error, never a crash.

/// A fuzz corpus file.
private func corpus(_ target: String, _ name: String) throws -> Data {
    try Data(contentsOf: Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus/\(target)/\(name)"))
}

// MARK: Bytes entry points

@Test func safetensorsFromBytesEqualsTheMappedFile() throws {
    let path = Fixtures.models.appendingPathComponent("interval1/model.safetensors").path
    let mapped = try SafetensorsFile(path: path)
    let copied = try SafetensorsFile(bytes: Data(contentsOf: URL(fileURLWithPath: path)), name: "interval1")
    #expect(copied.entries == mapped.entries)
    #expect(copied.metadata == mapped.metadata)
    for name in mapped.entries.keys.sorted().prefix(8) {
        let a = try #require(mapped.tensor(name)), b = try #require(copied.tensor(name))
        #expect(a.withUnsafeRawBytes { Array($0) } == b.withUnsafeRawBytes { Array($0) }, "\(name)")
    }
}

@Test func safetensorsFromBytesNamesTheInputInErrors() {
    #expect(throws: ModelLoadError.badHeader(file: "upload", reason: "file is empty")) {
        try SafetensorsFile(bytes: Data(), name: "upload")
    }
    #expect(throws: ModelLoadError.badHeader(file: "upload", reason: "file is 3 bytes, shorter than the 8-byte length prefix")) {
        try SafetensorsFile(bytes: Data([1, 2, 3]), name: "upload")
    }
}

@Test func weightStoreFromIndexBytesEqualsTheDirectory() throws {
    let directory = Fixtures.models.appendingPathComponent("sharded")
    let fromFiles = try WeightStore(directory: directory)
    let index = try Data(contentsOf: directory.appendingPathComponent(WeightStore.indexFileName))
    let fromBytes = try WeightStore(directory: directory, index: index)
    #expect(fromBytes.tensorNames == fromFiles.tensorNames)
    for name in fromFiles.tensorNames { #expect(fromBytes.entry(name) == fromFiles.entry(name)) }
}

// MARK: model-config

/// fuzz-model-config: an image side of 32 Gpx made `tokensPerImage` ((side / patch)^2 + 1)
/// overflow, a trap in `flamingo info` (and a wrapped count in an -Ounchecked build).
@Test func configWithAHugeImageSideIsRefused() throws {
    let json = try corpus("model-config", "crash-image-size-overflow")
    #expect(throws: ConfigError.invalid(key: "vision_config.image_size", reason: "32147483648 is over 65536, the largest supported")) {
        _ = try ModelRegistry.configuration(from: json, path: "config.json")
    }
}

/// Every size is bounded (so the shapes derived from it fit in Int) and positive.
@Test(arguments: [
    (#""num_hidden_layers": 65537"#, "num_hidden_layers", "65537 is over 65536, the largest supported"),
    (#""vocab_size": 9223372036854775807"#, "vocab_size", "9223372036854775807 is over 16777216, the largest supported"),
    (#""additional_vocab_size": 16777217"#, "additional_vocab_size", "16777217 is over 16777216, the largest supported"),
    (#""hidden_size": 4611686018427387904, "num_attention_heads": 1"#, "hidden_size", "4611686018427387904 is over 262144, the largest supported"),
    (#""max_position_embeddings": -9223372036854775808"#, "max_position_embeddings", "must be positive, got -9223372036854775808"),
    (#""vision_config": {"intermediate_size": -1}"#, "vision_config.intermediate_size", "must be positive, got -1"),
    (#""vision_config": {"image_size": 4294967296, "patch_size": 1}"#, "vision_config.image_size", "4294967296 is over 65536, the largest supported"),
    (#""use_resampler": true, "perceiver_config": {"resampler_n_heads": 4611686018427387904, "resampler_head_dim": 4}"#,
     "perceiver_config.resampler_n_heads", "4611686018427387904 is over 262144, the largest supported"),
    (#""use_resampler": true, "perceiver_config": {"resampler_n_heads": 1024, "resampler_head_dim": 1024}"#,
     "perceiver_config.resampler_n_heads x resampler_head_dim", "1048576 is over 262144, the largest supported"),
])
func configSizesAreBounded(members: String, key: String, reason: String) {
    let vision = members.contains("vision_config") ? "" : #", "vision_config": {}"#
    let json = Data(#"{"model_type": "idefics"\#(vision), \#(members)}"#.utf8)
    #expect(throws: ConfigError.invalid(key: key, reason: reason)) {
        _ = try ModelRegistry.configuration(from: json, path: "config.json")
    }
}

// MARK: image

/// fuzz-image: a 128-byte PNG whose iTXt chunk header declares 1.4 GB. libpng allocated that much
/// before finding the data missing; text chunks are now skipped unread. (The memory is checked
/// from outside, in FlamingoCLITests `pngWithAHugeTextChunkFailsInLittleMemory`.)
@Test func pngWithAHugeTextChunkIsTruncated() throws {
    let png = try corpus("image", "oom-itxt-length-1.4GB.png")
    #expect(throws: ImageError.truncated(file: "upload", format: .png, detail: "unexpected end of data")) {
        try RGBImage(decoding: png, name: "upload")
    }
}
