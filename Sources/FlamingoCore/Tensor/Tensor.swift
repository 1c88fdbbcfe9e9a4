import Foundation

/// Memory a tensor's elements live in: either owned (from `TensorMemory`, the caching allocator,
/// given back on deinit) or borrowed from a longer-lived owner such as a memory-mapped checkpoint
/// file.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let byteCount: Int
    /// Keeps a borrowed region (e.g. an mmap) alive; nil when this storage owns `base`.
    private let owner: AnyObject?

    /// Zeroed, 64-byte aligned memory.
    public init(byteCount: Int) {
        self.byteCount = byteCount
        self.base = TensorMemory.allocate(byteCount: byteCount, zeroed: true)
        self.owner = nil
    }

    /// 64-byte aligned memory whose contents are unspecified (a reused block keeps old values):
    /// only for memory the caller overwrites entirely before anything reads it.
    public init(uninitializedByteCount byteCount: Int) {
        self.byteCount = byteCount
        self.base = TensorMemory.allocate(byteCount: byteCount, zeroed: false)
        self.owner = nil
    }

    /// Borrows `byteCount` bytes at `base`, kept alive by `owner`.
    public init(borrowing base: UnsafeRawPointer, byteCount: Int, owner: AnyObject) {
        self.base = UnsafeMutableRawPointer(mutating: base)
        self.byteCount = byteCount
        self.owner = owner
    }

    public var isBorrowed: Bool { owner != nil }

    deinit {
        if owner == nil { TensorMemory.release(base, byteCount: byteCount) }
    }
}

/// An n-dimensional, row-major array. A value type with copy-on-write storage: copies share
/// memory until one of them writes. Borrowed (mapped) storage is never written in place.
///
/// Pointers are only handed out inside `withUnsafe…` closures and must not escape them.
public struct Tensor: @unchecked Sendable {
    public let dtype: DType
    public private(set) var shape: [Int]
    private var storage: TensorStorage
    private var byteOffset: Int

    /// A zero-filled tensor.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.dtype = dtype
        self.shape = shape
        self.storage = TensorStorage(byteCount: shape.reduce(1, *) * dtype.size)
        self.byteOffset = 0
    }

    /// A tensor whose elements are unspecified (reused memory keeps old values): for outputs the
    /// caller overwrites entirely before anything reads them (matmul outputs, copies).
    public init(uninitialized shape: [Int], dtype: DType = .f32) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.dtype = dtype
        self.shape = shape
        self.storage = TensorStorage(uninitializedByteCount: shape.reduce(1, *) * dtype.size)
        self.byteOffset = 0
    }

    /// An f32 tensor holding `values`.
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBytes { src in
            storage.base.copyMemory(from: src.baseAddress!, byteCount: src.count)
        }
    }

    /// A view of `storage` starting at `byteOffset` (used for mapped weights).
    public init(dtype: DType, shape: [Int], storage: TensorStorage, byteOffset: Int = 0) {
        precondition(byteOffset + shape.reduce(1, *) * dtype.size <= storage.byteCount)
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
        self.byteOffset = byteOffset
    }

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var byteCount: Int { count * dtype.size }
    /// True when the elements live in a mapped file rather than memory owned by a tensor.
    public var isMapped: Bool { storage.isBorrowed }

    /// Size of dimension `i`; negative `i` counts from the end.
    public func dim(_ i: Int) -> Int { shape[i < 0 ? shape.count + i : i] }

    /// Same elements, new shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        var t = self
        t.shape = newShape
        return t
    }

    /// Rows `range` of the leading dimension, sharing storage.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[0])
        let rowBytes = (count / max(shape[0], 1)) * dtype.size
        var newShape = shape
        newShape[0] = range.count
        return Tensor(dtype: dtype, shape: newShape, storage: storage, byteOffset: byteOffset + range.lowerBound * rowBytes)
    }

    public func withUnsafeRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.base + byteOffset, count: byteCount))
    }

    /// Read-only f32 elements. Precondition: `dtype == .f32`.
    public func withFloats<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(dtype == .f32, "withFloats on a \(dtype) tensor")
        let p = (storage.base + byteOffset).assumingMemoryBound(to: Float.self)
        return try body(UnsafeBufferPointer(start: p, count: count))
    }

    /// Writable f32 elements; copies first if the storage is shared or mapped.
    public mutating func withMutableFloats<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(dtype == .f32, "withMutableFloats on a \(dtype) tensor")
        makeStorageUniqueAndOwned()
        let p = storage.base.assumingMemoryBound(to: Float.self)
        return try body(UnsafeMutableBufferPointer(start: p, count: count))
    }

    /// Writable raw bytes of any dtype; copies first if the storage is shared or mapped.
    public mutating func withUnsafeMutableRawBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        makeStorageUniqueAndOwned()
        return try body(UnsafeMutableRawBufferPointer(start: storage.base, count: byteCount))
    }

    /// Copy-on-write: gives this tensor its own writable memory unless it already has it.
    private mutating func makeStorageUniqueAndOwned() {
        if !isKnownUniquelyReferenced(&storage) || storage.isBorrowed || byteOffset != 0 || storage.byteCount != byteCount {
            let fresh = TensorStorage(uninitializedByteCount: byteCount)
            fresh.base.copyMemory(from: storage.base + byteOffset, byteCount: byteCount)
            storage = fresh
            byteOffset = 0
        }
    }

    /// The elements widened to f32 (a copy for f16/bf16; shares storage for f32).
    public func toF32() -> Tensor {
        if dtype == .f32 { return self }
        var out = Tensor(uninitialized: shape)
        withUnsafeRawBytes { raw in
            let halves = raw.bindMemory(to: UInt16.self)
            out.withMutableFloats { dst in
                switch dtype {
                case .bf16: for i in 0..<dst.count { dst[i] = bf16ToFloat(halves[i]) }
                case .f16: for i in 0..<dst.count { dst[i] = f16ToFloat(halves[i]) }
                case .i8:
                    let bytes = raw.bindMemory(to: Int8.self)
                    for i in 0..<dst.count { dst[i] = Float(bytes[i]) }
                case .f32: break
                }
            }
        }
        return out
    }

    /// The elements in another float dtype (round to nearest even when narrowing).
    public func converted(to target: DType) -> Tensor {
        precondition(target != .i8, "int8 needs scales: use WeightMatrix.quantizedInt8")
        let f32 = toF32()
        if target == .f32 { return f32 }
        var out = Tensor(uninitialized: shape, dtype: target)
        f32.withFloats { src in
            out.withUnsafeMutableRawBytes { raw in
                let dst = raw.bindMemory(to: UInt16.self)
                for i in 0..<src.count {
                    dst[i] = target == .bf16 ? floatToBF16(src[i]) : Float16(src[i]).bitPattern
                }
            }
        }
        return out
    }

    /// All elements as a Swift array of f32 (widened as needed).
    public var scalars: [Float] { toF32().withFloats { Array($0) } }
}
