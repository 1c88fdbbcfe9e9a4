import Foundation
import Testing
import CKernels
import FlamingoCore

// The elementwise members (activate, softmax) of every kernel family the CPU can run against the
// naive twins (double precision): values across the range where each activation bends and its
// tails, the special values (±0, ±inf, NaN, denormals), lengths with vector tails, with and without
// the gating operand; and that a value's result does not depend on where the range it is in starts
// or ends (the product splits these ops over threads at arbitrary points).

private let activations: [(String, Int32)] = [
    ("gelu", Int32(FK_ACT_GELU)), ("gelu_tanh", Int32(FK_ACT_GELU_TANH)), ("quick_gelu", Int32(FK_ACT_QUICK_GELU)),
    ("silu", Int32(FK_ACT_SILU)), ("relu", Int32(FK_ACT_RELU)), ("relu2", Int32(FK_ACT_RELU2)),
]

/// -20 ... 20 densely, larger magnitudes, and the special values.
private let inputs: [Float] = {
    var v = stride(from: Float(-20), through: 20, by: 0.013).map { $0 }
    v += [0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 50, -50, 88, -88, 100, -100, 1e10, -1e10,
          .infinity, -.infinity, .nan, .greatestFiniteMagnitude, -.greatestFiniteMagnitude]
    return v
}()

private func activate(_ table: fk_kernels, _ values: [Float], gate: [Float]?, _ act: Int32) -> [Float] {
    var v = values
    v.withUnsafeMutableBufferPointer { vp in
        if let gate {
            gate.withUnsafeBufferPointer { table.activate(vp.baseAddress, $0.baseAddress, values.count, act) }
        } else {
            table.activate(vp.baseAddress, nil, values.count, act)
        }
    }
    return v
}

/// Within 3e-7·max(1, |x|) + 1e-6·|reference| (erf's polynomial is good to 1.5e-7; exp to ~1 ulp).
private func close(_ y: Float, _ reference: Float, x: Float) -> Bool {
    if reference.isNaN { return y.isNaN }
    if reference.isInfinite { return y == reference }
    return abs(y - reference) <= 3e-7 * max(1, abs(x)) + 1e-6 * abs(reference)
}

@Test func activationsOfEveryFamilyMatchTheNaiveTwins() {
    var rng = Rng(state: 7)
    let gate = inputs.map { _ in rng.next() * 3 }
    for family in runnableKernelFamilies("activations", special: .bf16) {
        for (name, act) in activations {
            for gated in [false, true] {
                let reference = activate(fk_naive, inputs, gate: gated ? gate : nil, act)
                let got = activate(family.table, inputs, gate: gated ? gate : nil, act)
                let bad = inputs.indices.filter { !close(got[$0], reference[$0], x: inputs[$0] * (gated ? max(1, abs(gate[$0])) : 1)) }
                #expect(bad.isEmpty, "\(family.name) \(name)\(gated ? " gated" : ""): \(bad.count) values off, e.g. \(bad.prefix(4).map { "x=\(inputs[$0]) got \(got[$0]) want \(reference[$0])" })")
            }
        }
    }
}

@Test func activationResultsDoNotDependOnWhereTheRangeStartsOrEnds() {
    var rng = Rng(state: 11)
    let x = (0..<203).map { _ in rng.next() * 6 }
    for family in runnableKernelFamilies("activation ranges", special: .bf16) {
        for (name, act) in activations {
            let whole = activate(family.table, x, gate: nil, act)
            for (start, count) in [(0, 1), (1, 7), (3, 16), (5, 17), (17, 33), (40, 163), (202, 1)] {
                let part = activate(family.table, Array(x[start..<(start + count)]), gate: nil, act)
                #expect(part.map(\.bitPattern) == whole[start..<(start + count)].map(\.bitPattern),
                        "\(family.name) \(name): [\(start), \(start + count)) differs from the same values in a longer range")
            }
        }
    }
}

@Test func softmaxOfEveryFamilyMatchesTheNaiveTwin() {
    var rng = Rng(state: 3)
    for family in runnableKernelFamilies("softmax", special: .bf16) {
        for n in [1, 2, 5, 8, 15, 16, 17, 31, 33, 197, 1000] {
            for scale: Float in [1, 0.125] {
                let x = (0..<n).map { _ in rng.next() * 40 }
                var reference = x, got = x
                reference.withUnsafeMutableBufferPointer { fk_naive.softmax($0.baseAddress, n, scale) }
                got.withUnsafeMutableBufferPointer { family.table.softmax($0.baseAddress, n, scale) }
                let bad = (0..<n).filter { abs(got[$0] - reference[$0]) > 1e-6 * reference[$0] + 1e-9 }
                #expect(bad.isEmpty, "\(family.name) softmax n=\(n) scale \(scale): \(bad.count) values off, e.g. \(bad.prefix(3).map { "got \(got[$0]) want \(reference[$0])" })")
                #expect(abs(got.reduce(0, +) - 1) < 1e-5, "\(family.name) softmax n=\(n): sums to \(got.reduce(0, +))")
            }
        }
    }
}

@Test func softmaxOfHugeAndEqualScoresStaysFinite() {
    for family in runnableKernelFamilies("softmax extremes", special: .bf16) {
        var equal = [Float](repeating: 3e38, count: 19)
        equal.withUnsafeMutableBufferPointer { family.table.softmax($0.baseAddress, 19, 1) }
        #expect(equal.allSatisfy { abs($0 - 1 / 19) < 1e-7 }, "\(family.name): \(equal)")
        var spread: [Float] = [-1e30, 0, 1e30] + [Float](repeating: -3e38, count: 14)
        spread.withUnsafeMutableBufferPointer { family.table.softmax($0.baseAddress, 17, 1) }
        #expect(spread[2] == 1 && spread.enumerated().allSatisfy { $0.offset == 2 || $0.element == 0 }, "\(family.name): \(spread)")
    }
}
