import FlamingoCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// All tensors of a checkpoint directory (one `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`), mapped lazily per shard. Tracks which names the model took,
/// so a load can fail on leftovers as well as on missing tensors.
public final class WeightStore: Sendable {
    public let directory: URL
    /// Tensor name → shard file name.
    private let fileForTensor: [String: String]
    private let shards: Mutex<[String: SafetensorsFile]>
    /// Names handed out so far, with their sizes in bytes.
    private let taken = Mutex<[String: Int]>([:])
    /// Parameters (weight values, not int8 scales) handed out so far, by name.
    private let takenParameters = Mutex<[String: Int]>([:])
    /// Set for a synthetic store: every `take` makes deterministic random weights of the asked
    /// shape (benchmarks of preset shapes without checkpoints; each process makes only its own).
    private let synthetic: (seed: UInt64, dtype: DType, keep: Bool, shapesOnly: Bool)?
    /// Weight matrices the architecture marks int8-eligible (`WeightScope.int8Eligible`) are made
    /// int8 blocks at load (`--quantize int8`), or, for a synthetic store, drawn as int8 blocks.
    public let quantizeMatrices: Bool
    /// A dry run over a checkpoint's table: tensors have its shapes and dtypes but read as zeros.
    private let dryRun: Bool

    /// Name suffixes of an int8 matrix's two tensors: `<name>.q8` (I8 [N, K]) and
    /// `<name>.q8_scale` (F16 [N, ceil(K/32)]), e.g. `model.layers.0.mlp.up_proj.weight.q8`.
    public static let int8ValuesSuffix = ".q8"
    public static let int8ScalesSuffix = ".q8_scale"

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    public convenience init(directory: URL, quantizeMatrices: Bool = false) throws {
        let fm = FileManager.default
        let indexURL = directory.appendingPathComponent(Self.indexFileName)
        let singleURL = directory.appendingPathComponent(Self.singleFileName)
        if fm.fileExists(atPath: indexURL.path) {
            guard let data = try? Data(contentsOf: indexURL) else {
                throw ModelLoadError.badIndex(file: indexURL.path, reason: "cannot be read")
            }
            try self.init(directory: directory, index: data, quantizeMatrices: quantizeMatrices)
        } else if fm.fileExists(atPath: singleURL.path) {
            let file = try SafetensorsFile(path: singleURL.path)
            self.init(directory: directory, fileForTensor: Dictionary(uniqueKeysWithValues: file.entries.keys.map { ($0, Self.singleFileName) }),
                      shards: [Self.singleFileName: file], quantizeMatrices: quantizeMatrices)
        } else {
            throw ModelLoadError.missingFile("\(singleURL.path) (or \(Self.indexFileName))")
        }
    }

    /// The shards of `directory` that `index` (the bytes of a `model.safetensors.index.json`)
    /// lists. Every shard is opened now: a bad or missing shard fails the load, not a later request.
    public convenience init(directory: URL, index: Data, quantizeMatrices: Bool = false) throws {
        let indexPath = directory.appendingPathComponent(Self.indexFileName).path
        guard let map = (try? JSONDecoder().decode(SafetensorsIndex.self, from: index))?.weightMap else {
            throw ModelLoadError.badIndex(file: indexPath, reason: "not a JSON object with a \"weight_map\" of tensor name to file")
        }
        for file in Set(map.values) where file.contains("/") || file.hasPrefix(".") {
            throw ModelLoadError.badIndex(file: indexPath, reason: "shard name '\(file)' is not a file in the model directory")
        }
        var opened: [String: SafetensorsFile] = [:]
        for file in Set(map.values).sorted() {
            let url = directory.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: url.path) else { throw ModelLoadError.missingFile(url.path) }
            opened[file] = try SafetensorsFile(path: url.path)
        }
        for (name, file) in map where opened[file]?.entries[name] == nil {
            throw ModelLoadError.badIndex(file: indexPath, reason: "tensor '\(name)' is listed in \(file) but that file does not contain it")
        }
        self.init(directory: directory, fileForTensor: map, shards: opened, quantizeMatrices: quantizeMatrices)
    }

    private init(directory: URL, fileForTensor: [String: String], shards: [String: SafetensorsFile], quantizeMatrices: Bool) {
        self.directory = directory
        self.fileForTensor = fileForTensor
        self.shards = Mutex(shards)
        self.synthetic = nil
        self.quantizeMatrices = quantizeMatrices
        dryRun = false
    }

    /// A store with no files whose tensors are random, seeded by `seed` and the tensor's name.
    /// `keep` retains what it makes, for `syntheticTensors`.
    public init(syntheticSeed seed: UInt64, dtype: DType, keep: Bool = false, quantizeMatrices: Bool = false) {
        self.quantizeMatrices = quantizeMatrices
        directory = URL(fileURLWithPath: "/synthetic")
        fileForTensor = [:]
        shards = Mutex([:])
        synthetic = (seed, dtype, keep, false)
        dryRun = false
    }

    /// A store whose tensors have shapes but no contents (they read as zeros and cost no memory):
    /// a dry run of loading, so the planner sizes exactly what a load would map or make. `keep`
    /// retains them, for `syntheticTensors` (a checkpoint's table without its data).
    public init(shapesOnly dtype: DType, quantizeMatrices: Bool = false, keep: Bool = false) {
        self.quantizeMatrices = quantizeMatrices
        directory = URL(fileURLWithPath: "/shapes-only")
        fileForTensor = [:]
        shards = Mutex([:])
        synthetic = (0, dtype, keep, true)
        dryRun = false
    }

    /// A dry run of loading `store`'s checkpoint (quantized at load when `quantizeMatrices`):
    /// every tensor is checked against the table as a load checks it, and costs no memory.
    public init(dryRunOf store: WeightStore, quantizeMatrices: Bool) {
        directory = store.directory
        fileForTensor = store.fileForTensor
        shards = Mutex(store.shards.withLock { $0 })
        synthetic = nil
        self.quantizeMatrices = quantizeMatrices
        dryRun = true
    }

    public var tensorNames: [String] { fileForTensor.keys.sorted() }

    /// Bytes of every tensor handed out so far, by name (int8 matrices as their two tensors).
    public var takenBytesByName: [String: Int] { taken.withLock { $0 } }
    /// Weight values of every tensor handed out so far, by name (0 for int8 scales).
    public var takenParametersByName: [String: Int] { takenParameters.withLock { $0 } }

    /// Whether the checkpoint stores `name`. A synthetic or shapes-only store stores nothing: it
    /// makes whatever is taken, and optional tensors (an untied head) take their default.
    public func contains(_ name: String) -> Bool {
        fileForTensor[name] != nil || fileForTensor[name + Self.int8ValuesSuffix] != nil
    }

    /// The tensors a synthetic store has made, by name (to write them out as a checkpoint).
    public var syntheticTensors: [(name: String, tensor: Tensor)] {
        made.withLock { $0.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }
    private let made = Mutex<[String: Tensor]>([:])

    /// Bytes of weights handed out so far (what this process maps or made).
    public var takenBytes: Int { taken.withLock { $0.values.reduce(0, +) } }
    /// Weight values handed out so far (an int8 matrix counts its values, not its scales).
    public var takenParameterCount: Int { takenParameters.withLock { $0.values.reduce(0, +) } }

    /// Shape and dtype without mapping anything.
    public func entry(_ name: String) -> SafetensorsFile.Entry? {
        guard let file = fileForTensor[name] else { return nil }
        return shards.withLock { $0[file]?.entries[name] }
    }

    /// Takes tensor `name`, checking its shape.
    public func take(_ name: String, shape: [Int]) throws -> Tensor {
        if let synthetic {
            let t = synthetic.shapesOnly ? Self.zeroTensor(shape: shape, dtype: synthetic.dtype)
                : Self.randomTensor(shape: shape, dtype: synthetic.dtype, seed: synthetic.seed ^ Self.hash(name))
            taken.withLock { $0[name] = t.byteCount }
            takenParameters.withLock { $0[name] = t.count }
            if synthetic.keep { made.withLock { $0[name] = t } }
            return t
        }
        if dryRun {
            guard let e = entry(name) else { throw ModelLoadError.missingTensor(name: name, searched: directory.path) }
            guard e.shape == shape else { throw ModelLoadError.shapeMismatch(name: name, expected: shape, got: e.shape) }
            taken.withLock { $0[name] = e.range.count }
            if !name.hasSuffix(Self.int8ScalesSuffix) { takenParameters.withLock { $0[name] = shape.reduce(1, *) } }
            return Self.zeroTensor(shape: shape, dtype: e.dtype)
        }
        guard let fileName = fileForTensor[name],
              let t = shards.withLock({ $0[fileName]?.tensor(name) }) else {
            throw ModelLoadError.missingTensor(name: name, searched: directory.path)
        }
        guard t.shape == shape else {
            throw ModelLoadError.shapeMismatch(name: name, expected: shape, got: t.shape)
        }
        taken.withLock { $0[name] = t.byteCount }
        if !name.hasSuffix(Self.int8ScalesSuffix) { takenParameters.withLock { $0[name] = t.count } }
        return t
    }

    /// Takes the weight matrix `name` [rows, columns]: dense as stored, int8 when the checkpoint
    /// holds `<name>.q8` + `<name>.q8_scale`, or quantized now when `quantizeMatrices` and the
    /// name is one the quantization rule covers.
    /// `int8Eligible`: the architecture stores this matrix in int8 when quantized (recorded in
    /// `int8EligibleNames` whether or not this store quantizes).
    public func takeMatrix(_ name: String, rows: Int, columns: Int, int8Eligible: Bool) throws -> WeightMatrix {
        let blocks = WeightMatrix.blockCount(columns)
        let valuesName = name + Self.int8ValuesSuffix, scalesName = name + Self.int8ScalesSuffix
        if int8Eligible { eligible.withLock { _ = $0.insert(name) } }
        if let synthetic, quantizeMatrices, int8Eligible, synthetic.shapesOnly {
            let values = Self.zeroTensor(shape: [rows, columns], dtype: .i8)
            let scales = Self.zeroTensor(shape: [rows, blocks], dtype: .f16)
            taken.withLock { $0[valuesName] = values.byteCount; $0[scalesName] = scales.byteCount }
            takenParameters.withLock { $0[valuesName] = values.count }
            if synthetic.keep { made.withLock { $0[valuesName] = values; $0[scalesName] = scales } }
            return WeightMatrix(int8Values: values, scales: scales)
        }
        if let synthetic, quantizeMatrices, int8Eligible {
            let values = Self.randomTensor(shape: [rows, columns], dtype: .i8, seed: synthetic.seed ^ Self.hash(valuesName))
            // Scales such that values span about ±0.05, as the dense synthetic weights do.
            var scales = Tensor(zeros: [rows, blocks], dtype: .f16)
            let scale = Float16(0.05 / 127).bitPattern
            scales.withUnsafeMutableRawBytes { raw in
                let p = raw.bindMemory(to: UInt16.self)
                for i in 0..<p.count { p[i] = scale }
            }
            taken.withLock { $0[valuesName] = values.byteCount; $0[scalesName] = scales.byteCount }
            takenParameters.withLock { $0[valuesName] = values.count }
            if synthetic.keep { made.withLock { $0[valuesName] = values; $0[scalesName] = scales } }
            return WeightMatrix(int8Values: values, scales: scales)
        }
        if synthetic == nil, fileForTensor[valuesName] != nil {
            let values = try take(valuesName, shape: [rows, columns])
            let scales = try take(scalesName, shape: [rows, blocks])
            guard values.dtype == .i8 else { throw ModelLoadError.wrongDType(name: valuesName, expected: "I8", got: values.dtype) }
            guard scales.dtype == .f16 else { throw ModelLoadError.wrongDType(name: scalesName, expected: "F16", got: scales.dtype) }
            return WeightMatrix(int8Values: values, scales: scales)
        }
        let dense = try take(name, shape: [rows, columns])
        guard dense.dtype != .i8 else {
            throw ModelLoadError.wrongDType(name: name, expected: "F32, F16 or BF16 (int8 matrices are stored as \(valuesName) + \(scalesName))", got: .i8)
        }
        guard quantizeMatrices, int8Eligible else { return WeightMatrix(dense) }
        if dryRun {
            let values = Self.zeroTensor(shape: [rows, columns], dtype: .i8)
            let scales = Self.zeroTensor(shape: [rows, blocks], dtype: .f16)
            taken.withLock { $0[name] = values.byteCount + scales.byteCount }
            return WeightMatrix(int8Values: values, scales: scales)
        }
        do {
            let q = try WeightMatrix.quantizedInt8(dense)
            taken.withLock { $0[name] = q.byteCount }  // what stays resident: the mapped original is dropped
            return q
        } catch {
            throw ModelLoadError.quantization(name: name, reason: "\(error)")
        }
    }

    /// Records that of matrix `name` (taken whole) this process keeps only a share of `bytes` bytes
    /// and `parameters` values (a tensor-parallel rank's rows or columns).
    func keepShare(of name: String, bytes: Int, parameters: Int) {
        let names = [name, name + Self.int8ValuesSuffix, name + Self.int8ScalesSuffix]
        taken.withLock { t in
            guard names.contains(where: { t[$0] != nil }) else { return }
            for n in names { t[n] = nil }
            t[name] = bytes
        }
        takenParameters.withLock { p in
            for n in names { p[n] = nil }
            p[name] = parameters
        }
    }

    /// Matrices taken so far that the architecture stores in int8 when quantized.
    public var int8EligibleNames: Set<String> { eligible.withLock { $0 } }
    private let eligible = Mutex<Set<String>>([])

    /// FNV-1a, stable across runs (Swift's Hasher is seeded per process).
    static func hash(_ name: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// A tensor of `shape` over a shared read-only mapping of zero pages: no memory until read.
    static func zeroTensor(shape: [Int], dtype: DType) -> Tensor {
        let bytes = shape.reduce(1, *) * dtype.size
        return Tensor(dtype: dtype, shape: shape, storage: ZeroPages.shared.storage(bytes))
    }

    /// Uniform values in ±0.05 (small enough that activations stay finite through many layers).
    static func randomTensor(shape: [Int], dtype: DType, seed: UInt64) -> Tensor {
        var t = Tensor(zeros: shape, dtype: dtype)
        let count = t.count
        let chunk = 1 << 16
        let fill: (UnsafeMutableRawPointer) -> Void = { base in
            parallelFor((count + chunk - 1) / chunk) { chunks in
                for c in chunks {
                    var rng = SeededGenerator(seed: seed &+ UInt64(c) &* 0x9E37_79B9_7F4A_7C15)
                    for i in (c * chunk)..<min(count, (c + 1) * chunk) {
                        let u = Float(rng.next() >> 40) / Float(1 << 24) * 0.1 - 0.05
                        switch dtype {
                        case .f32: base.storeBytes(of: u, toByteOffset: i * 4, as: Float.self)
                        case .bf16: base.storeBytes(of: floatToBF16(u), toByteOffset: i * 2, as: UInt16.self)
                        case .f16: base.storeBytes(of: Float16(u).bitPattern, toByteOffset: i * 2, as: UInt16.self)
                        case .i8: base.storeBytes(of: Int8(u * 2540), toByteOffset: i, as: Int8.self)
                        }
                    }
                }
            }
        }
        t.withUnsafeMutableRawBytes { fill($0.baseAddress!) }
        return t
    }

    /// Names under any of `prefixes` that were never taken (ignoring `ignoring`).
    public func untakenNames(prefixes: [String], ignoring: (String) -> Bool = { _ in false }) -> [String] {
        let done = taken.withLock { $0 }
        return fileForTensor.keys.filter { name in
            done[name] == nil && !ignoring(name) && prefixes.contains { name.hasPrefix($0) }
        }.sorted()
    }
}

/// A view of a `WeightStore` under a name prefix: blocks read their own relative keys
/// (`w.scope("layers", 3).take("self_attn.q_proj.weight", ...)`) and never spell full names.
public struct WeightScope: Sendable {
    public let store: WeightStore
    public let prefix: String
    /// Weight matrices under this scope are stored in int8 when the model is quantized.
    public let int8: Bool
    /// Set on a tensor-parallel rank: layers under this scope take their share (`Linear(split:)`).
    public let shard: TensorShard?

    public init(store: WeightStore, prefix: String = "", int8: Bool = false, shard: TensorShard? = nil) {
        self.store = store
        self.prefix = prefix
        self.int8 = int8
        self.shard = shard
    }

    /// A nested scope: `scope("layers", 3)` → "<prefix>layers.3.".
    public func scope(_ parts: CustomStringConvertible...) -> WeightScope {
        WeightScope(store: store, prefix: prefix + parts.map(\.description).joined(separator: ".") + ".", int8: int8, shard: shard)
    }

    /// This scope with its weight matrices marked int8-eligible: the architecture's quantization
    /// rule (which matrices `--quantize int8` and `flamingo quantize` turn into int8 blocks).
    public func int8Eligible() -> WeightScope { WeightScope(store: store, prefix: prefix, int8: true, shard: shard) }

    /// This scope split over a tensor-parallel group (nil: whole).
    public func sharded(_ shard: TensorShard?) -> WeightScope { WeightScope(store: store, prefix: prefix, int8: int8, shard: shard) }

    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        try store.take(prefix + key, shape: shape)
    }

    /// A weight matrix [rows, columns] in its stored (or load-time quantized) format.
    public func takeMatrix(_ key: String, rows: Int, columns: Int) throws -> WeightMatrix {
        try store.takeMatrix(prefix + key, rows: rows, columns: columns, int8Eligible: int8)
    }

    public func contains(_ key: String) -> Bool { store.contains(prefix + key) }

    /// Shape of `key` as stored, if present.
    public func storedShape(_ key: String) -> [Int]? { store.entry(prefix + key)?.shape }
}

/// Anonymous read-only mappings that read as zeros and take no physical memory (the kernel maps
/// the zero page): backing for the shapes of a dry-run load. Grown as larger tensors are asked for.
final class ZeroPages: @unchecked Sendable {
    static let shared = ZeroPages()
    private let regions = Mutex<[Region]>([])

    final class Region: @unchecked Sendable {
        let base: UnsafeRawPointer
        let size: Int
        init?(size: Int) {
            guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), p != MAP_FAILED else { return nil }
            base = UnsafeRawPointer(p)
            self.size = size
        }
        deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    func storage(_ bytes: Int) -> TensorStorage {
        let region = regions.withLock { list -> Region in
            if let r = list.last, r.size >= bytes { return r }
            var size = 1 << 20
            while size < bytes { size <<= 1 }
            guard let r = Region(size: size) else { preconditionFailure("cannot reserve \(size) bytes of address space") }
            list.append(r)
            return r
        }
        return TensorStorage(borrowing: region.base, byteCount: bytes, owner: region)
    }
}
