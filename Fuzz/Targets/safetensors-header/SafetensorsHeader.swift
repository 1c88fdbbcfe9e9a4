import FlamingoCore
import FlamingoModel
import Foundation
import FuzzSupport

// A whole .safetensors file from bytes (`SafetensorsFile(bytes:name:)`, the checks a mapped
// checkpoint gets): length prefix, JSON header, dtypes, shapes, offsets, overlaps. Every tensor
// the file then hands out must be the size its entry says, and all of its bytes must be readable
// (the heap copy is exactly as long as the input, so a view past the end is an ASan report).

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { bytes in
        guard let file = try? SafetensorsFile(bytes: bytes, name: "fuzz.safetensors") else { return }
        for (name, entry) in file.entries {
            guard let tensor = file.tensor(name) else {
                invariant(false, "entry '\(name)' has no tensor")
                return
            }
            invariant(tensor.dtype == entry.dtype && tensor.shape == entry.shape, "tensor '\(name)' differs from its entry")
            tensor.withUnsafeRawBytes { raw in
                invariant(raw.count == entry.range.count, "tensor '\(name)' has \(raw.count) bytes, its entry \(entry.range.count)")
                var sum: UInt8 = 0
                for b in raw { sum &+= b }
                blackHole(sum)
            }
        }
    }
    return 0
}

@inline(never) func blackHole<T>(_ value: T) { _ = value }

/// Small files written by the product's writer: every dtype, an empty and a 0-d tensor, metadata-free.
private func seeds() throws -> [(name: String, bytes: Data)] {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-safetensors-seeds-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var tensors: [(name: String, tensor: Tensor)] = [
        ("model.embed_tokens.weight", Tensor((0..<24).map { Float($0) / 8 }, shape: [6, 4])),
        ("model.norm.weight", Tensor([1, 1, 1, 1], shape: [4])),
        ("scalar", Tensor([3], shape: [])),
        ("empty", Tensor(zeros: [0, 4])),
    ]
    for dtype in [DType.bf16, .f16, .i8] { tensors.append(("typed.\(dtype.rawValue)", Tensor(zeros: [2, 3], dtype: dtype))) }
    var made: [(name: String, bytes: Data)] = []
    for (i, subset) in [tensors, Array(tensors.prefix(1)), Array(tensors.suffix(3))].enumerated() {
        try SafetensorsWriter.write(subset, to: directory)
        made.append(("writer-\(i)", try Data(contentsOf: directory.appendingPathComponent(WeightStore.singleFileName))))
    }
    return made
}

@main struct SafetensorsHeaderFuzz {
    static func main() { FuzzMain.run(testOneInput, seeds: seeds) }
}
