import FlamingoModel
import Foundation
import FuzzSupport

// model.safetensors.index.json from bytes (`WeightStore(directory:index:)`), against the real
// shards of the test fixture Tests/Fixtures/models/sharded: JSON, the weight map, shard names
// (no paths out of the directory), every listed shard opened and checked, every listed tensor
// present. A store that loads must then hand out each tensor it lists at its stored shape.

private let shards = FuzzFixtures.models.appendingPathComponent("sharded")

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { index in
        guard let store = try? WeightStore(directory: shards, index: index) else { return }
        for name in store.tensorNames {
            guard let entry = store.entry(name) else {
                invariant(false, "listed tensor '\(name)' has no entry")
                return
            }
            do {
                let tensor = try store.take(name, shape: entry.shape)
                invariant(tensor.byteCount == entry.range.count, "tensor '\(name)' has the wrong size")
            } catch {
                invariant(false, "listed tensor '\(name)' cannot be taken: \(error)")
            }
        }
    }
    return 0
}

@main struct SafetensorsIndexFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
