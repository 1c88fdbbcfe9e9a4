import Foundation

/// How the next token is chosen from logits.
public enum SamplingParameters: Sendable, Equatable {
    /// Argmax; ties go to the lowest id (as torch.argmax).
    case greedy
    /// Softmax(logits / temperature), keep the smallest set of tokens whose probability reaches
    /// `topP`, draw with a seeded generator.
    case sample(temperature: Float, topP: Float, seed: UInt64)
}

/// A small, fast, seedable generator (SplitMix64), so a seed reproduces a sampled answer.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Picks tokens for one sequence; holds the random state across steps.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var generator: SeededGenerator
    // Sampling's per-step work arrays, kept between steps (filled anew each step) so a step
    // allocates nothing once they have reached the vocabulary's size.
    private var probabilities: [Float] = []
    private var order: [Int] = []

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        if case .sample(_, _, let seed) = parameters {
            generator = SeededGenerator(seed: seed)
        } else {
            generator = SeededGenerator(seed: 0)
        }
    }

    public mutating func next(logits: [Float]) -> Int {
        switch parameters {
        case .greedy:
            return Self.argmax(logits)
        case .sample(let temperature, let topP, _):
            if temperature <= 0 { return Self.argmax(logits) }
            let maxLogit = logits.max() ?? 0
            probabilities.removeAll(keepingCapacity: true)
            for l in logits { probabilities.append(exp((l - maxLogit) / temperature)) }
            let total = probabilities.reduce(0, +)
            for i in probabilities.indices { probabilities[i] /= total }
            // A total order (ties by id), so the sort's result is unique.
            order.removeAll(keepingCapacity: true)
            order.append(contentsOf: probabilities.indices)
            order.sort { [probabilities] a, b in probabilities[a] > probabilities[b] || (probabilities[a] == probabilities[b] && a < b) }
            // The kept tokens are order[0..<kept]: the smallest prefix whose mass reaches topP.
            var kept = 0
            var mass: Float = 0
            for i in order {
                kept += 1
                mass += probabilities[i]
                if mass >= topP { break }
            }
            let draw = Float(Double(generator.next() >> 11) / Double(1 << 53)) * mass
            var acc: Float = 0
            for i in order[0..<kept] {
                acc += probabilities[i]
                if draw < acc { return i }
            }
            return kept > 0 ? order[kept - 1] : Self.argmax(logits)
        }
    }

    public static func argmax(_ v: [Float]) -> Int {
        var best = 0
        for i in v.indices where v[i] > v[best] { best = i }
        return best
    }
}

/// One sequence's output so far and the rule that ends it, shared by the in-process `Generator`
/// and the pipeline's coordinator: each step's logits give the next token (`Sampler`);
/// generation ends at a stop token (kept in the output, as transformers does) or after
/// `maxTokens`.
public struct SequenceOutput: Sendable {
    public private(set) var tokens: [Int] = []
    private var sampler: Sampler
    private let stopTokens: Set<Int>
    private let maxTokens: Int

    public init(_ request: GenerationRequest) {
        sampler = Sampler(request.sampling)
        stopTokens = request.stopTokens
        maxTokens = request.maxTokens
        tokens.reserveCapacity(min(max(request.maxTokens, 0), 1 << 16))  // no regrowth while decoding
    }

    /// Picks the next token from `logits` and appends it; `finish` says why generation ends
    /// with this token, nil when it goes on.
    public mutating func next(logits: [Float]) -> (token: Int, finish: FinishReason?) {
        let token = sampler.next(logits: logits)
        tokens.append(token)
        if stopTokens.contains(token) { return (token, .stop) }
        return (token, tokens.count >= maxTokens ? .length : nil)
    }
}
