import Foundation
import Testing
import FlamingoCore

// Building blocks the next architectures need: grouped-query attention against the layout
// transformers defines it by (`repeat_kv`: each key/value head copied for its group of query
// heads), and RoPE scaling against transformers' own inverse frequencies.

private func values(_ n: Int, seed: UInt64) -> [Float] {
    var state = seed
    return (0..<n).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 2000) / 1000 - 1
    }
}

/// [S, Hkv·D] → [S, H·D]: key/value head j repeated for query heads j·g ..< (j+1)·g.
private func repeatHeads(_ x: [Float], rows: Int, kvHeads: Int, group: Int, headDim: Int) -> [Float] {
    var out: [Float] = []
    for r in 0..<rows {
        for j in 0..<kvHeads {
            let head = x[(r * kvHeads + j) * headDim ..< (r * kvHeads + j + 1) * headDim]
            for _ in 0..<group { out += head }
        }
    }
    return out
}

@Test(arguments: [(8, 2, 3, 5, AttentionMask.none), (8, 4, 1, 9, .causal(offset: 8)), (6, 6, 4, 4, .causal(offset: 0)),
                  (4, 1, 7, 7, .none)])
func groupedQueryAttentionEqualsRepeatedKeyValueHeads(heads: Int, kvHeads: Int, t: Int, s: Int, mask: AttentionMask) {
    let d = 16
    let q = Tensor(values(t * heads * d, seed: 1), shape: [t, heads * d])
    let k = values(s * kvHeads * d, seed: 2), v = values(s * kvHeads * d, seed: 3)
    let grouped = attention(q: q, k: Tensor(k, shape: [s, kvHeads * d]), v: Tensor(v, shape: [s, kvHeads * d]),
                            heads: heads, keyValueHeads: kvHeads, scale: 0.25, mask: mask)
    let g = heads / kvHeads
    let expanded = attention(q: q, k: Tensor(repeatHeads(k, rows: s, kvHeads: kvHeads, group: g, headDim: d), shape: [s, heads * d]),
                             v: Tensor(repeatHeads(v, rows: s, kvHeads: kvHeads, group: g, headDim: d), shape: [s, heads * d]),
                             heads: heads, scale: 0.25, mask: mask)
    // The same products in the same order: equal bit for bit.
    #expect(grouped.scalars == expanded.scalars)
}

private struct RoPECase: Decodable {
    let name: String
    let head_dim: Int
    let rope_theta: Float
    let rope_parameters: [String: RoPEValue]
    let inv_freq: [Float]
}

private enum RoPEValue: Decodable {
    case number(Float), text(String)
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Float.self) { self = .number(n) } else { self = .text(try c.decode(String.self)) }
    }
    var number: Float { if case .number(let n) = self { n } else { .nan } }
}

private struct RoPEFixtures: Decodable { let cases: [RoPECase] }

private let ropeFixtures: [RoPECase] = {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/rope/inv_freq.json")
    return (try? JSONDecoder().decode(RoPEFixtures.self, from: Data(contentsOf: url)).cases) ?? []
}()

@Test(arguments: ropeFixtures.map(\.name))
func ropeScalingMatchesTransformers(name: String) throws {
    let c = try #require(ropeFixtures.first { $0.name == name })
    let p = c.rope_parameters
    let scaling: RoPEScaling
    switch p["rope_type"] {
    case .text("linear"): scaling = .linear(factor: p["factor"]!.number)
    case .text("llama3"):
        scaling = .llama3(factor: p["factor"]!.number, lowFrequencyFactor: p["low_freq_factor"]!.number,
                          highFrequencyFactor: p["high_freq_factor"]!.number,
                          originalMaxPositions: Int(p["original_max_position_embeddings"]!.number))
    default: scaling = .none
    }
    let rope = RotaryEmbedding(headDim: c.head_dim, base: c.rope_theta, scaling: scaling)
    let worst = zip(rope.inverseFrequencies, c.inv_freq).map { abs($0 - $1) / abs($1) }.max() ?? .infinity
    print("RoPE \(name): max relative difference from transformers \(worst)")
    #expect(rope.inverseFrequencies.count == c.inv_freq.count)
    #expect(worst <= 1e-5, "\(name)")
}

@Test func ropeFixturesArePresent() {
    #expect(ropeFixtures.map(\.name) == ["default", "linear", "llama3", "llama3_small"])
}
