import FlamingoCore
import Foundation
import Synchronization

// Tensor parallelism (Megatron-LM's split of a transformer layer): within a stage of n ranks,
// rank k holds heads k·H/n..<(k+1)·H/n of every attention (their Q/K/V rows, "column parallel")
// and the matching input columns of o_proj ("row parallel"), the same split of the MLP's
// gate/up rows and down_proj columns; o_proj and down_proj then give partial sums that one
// allreduce per branch adds up. Norms, gates and biases stay whole on every rank.

/// How ranks of a tensor-parallel group add their partial sums.
public protocol TensorParallelCommunicator: Sendable {
    /// The sum over the group of every rank's `partial` (same shape on every rank), added in group
    /// rank order so every rank gets the same bits. Throws when a peer failed.
    func allReduceSum(_ partial: Tensor) throws -> Tensor
}

/// This rank's share of a tensor-parallel group.
public final class TensorShard: Sendable, Equatable {
    public let rank: Int
    public let count: Int
    let communicator: any TensorParallelCommunicator
    /// The first failure of an allreduce (a forward pass cannot throw: the stage checks this after it).
    private let failure = Mutex<String?>(nil)

    public init(rank: Int, count: Int, communicator: any TensorParallelCommunicator) {
        precondition(count >= 1 && (0..<count).contains(rank), "tensor-parallel rank \(rank) of \(count)")
        self.rank = rank
        self.count = count
        self.communicator = communicator
    }

    public static func == (a: TensorShard, b: TensorShard) -> Bool { a.rank == b.rank && a.count == b.count }

    /// `partial` summed over `shard`'s group; `partial` itself without tensor parallelism.
    static func sum(_ partial: Tensor, over shard: TensorShard?) -> Tensor {
        shard?.reduce(partial) ?? partial
    }

    /// The group's sum of `partial` (once a peer failed: `partial` itself, and `failureMessage` says why).
    func reduce(_ partial: Tensor) -> Tensor {
        guard failure.withLock({ $0 == nil }) else { return partial }
        do {
            return try communicator.allReduceSum(partial)
        } catch {
            failure.withLock { $0 = $0 ?? ((error as? LocalizedError)?.errorDescription ?? "\(error)") }
            return partial
        }
    }

    /// Why an allreduce failed, if one did (the stage's output is then not to be used).
    public var failureMessage: String? { failure.withLock { $0 } }

    /// This rank's part of `total` items split evenly (heads, channels); checked divisible at load.
    func share(_ total: Int) -> Range<Int> {
        let part = total / count
        return (rank * part)..<((rank + 1) * part)
    }
}

/// Which dimension of W [out, in] a tensor-parallel rank holds a share of.
enum TensorSplit {
    /// Rows of W (its outputs: Q/K/V heads, gate/up channels): a view of the mapped matrix.
    case outputs
    /// Columns of W (its inputs: o_proj, down_proj): copied once at load; the output is a partial sum.
    case inputs
}

extension WeightMatrix {
    /// Rows `range` (a view; int8 scales follow their rows).
    func rows(_ range: Range<Int>) -> WeightMatrix {
        scales.map { WeightMatrix(int8Values: values.rows(range), scales: $0.rows(range)) } ?? WeightMatrix(values.rows(range))
    }

    /// Columns `range`, copied into owned memory; for int8 the range must start and end on blocks.
    func columns(_ range: Range<Int>) throws -> WeightMatrix {
        func copyColumns(_ t: Tensor, _ r: Range<Int>) -> Tensor {
            let (n, k, size) = (t.dim(0), t.dim(1), t.dtype.size)
            var out = Tensor(zeros: [n, r.count], dtype: t.dtype)
            t.withUnsafeRawBytes { src in
                out.withUnsafeMutableRawBytes { dst in
                    for row in 0..<n {
                        memcpy(dst.baseAddress! + row * r.count * size, src.baseAddress! + (row * k + r.lowerBound) * size, r.count * size)
                    }
                }
            }
            return out
        }
        guard let scales else { return WeightMatrix(copyColumns(values, range)) }
        let block = q8BlockSize
        guard range.lowerBound % block == 0, range.upperBound % block == 0 || range.upperBound == columns else {
            throw ModelLoadError.quantization(name: "tensor-parallel split", reason:
                "an int8 matrix splits only on blocks of \(block) columns, and columns \(range) are not")
        }
        let blocks = (range.lowerBound / block)..<((range.upperBound + block - 1) / block)
        return WeightMatrix(int8Values: copyColumns(values, range), scales: copyColumns(scales, blocks))
    }
}
