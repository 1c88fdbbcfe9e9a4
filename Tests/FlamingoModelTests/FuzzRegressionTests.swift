import FlamingoCore
import Foundation
import Testing
import FlamingoModel

// The bytes entry points the fuzz targets drive (Fuzz/Targets), and the inputs the fuzzers found
// (each also in Fuzz/corpus/TARGET): every one must be a clear error, never a crash.

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

