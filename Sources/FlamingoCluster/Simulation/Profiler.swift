import FlamingoCore
import FlamingoModel
import Foundation
import Synchronization

/// Measures a model's parts on this machine (`flamingo profile`): each part is loaded alone (one
/// decoder layer, one layer with its cross-attention block, the head, the vision stage) from the
/// model's own weights or synthetic ones, and timed on steps of several sizes, as the pipeline
/// runs them (several sequences of one token each, and one decode step at a long context for the
/// attention cost). Each figure is the mean of at least `repeats` runs (more for short ones) after a warm-up run.
public struct Profiler {
    public let configuration: any ModelConfiguration
    public let weights: WeightStore
    public let name: String
    public let dtype: String
    /// Step sizes (tokens) timed for every part.
    public var stepTokens = [1, 2, 4, 8, 16, 32, 64]
    /// Cached tokens per sequence for the attention cost.
    public var context = 256
    public var repeats = 3
    /// Each figure's runs add up to at least this long.
    public var minimumSeconds = 0.5
    /// Measure how k = 1...n ranks on this one machine slow each other down (0: do not).
    public var sharedHostRanks = 0
    public var log: (String) -> Void = { _ in }

    public init(configuration: any ModelConfiguration, weights: WeightStore, name: String, dtype: String) {
        self.configuration = configuration
        self.weights = weights
        self.name = name
        self.dtype = dtype
    }

    private func mean(_ body: () -> Void) -> Double {
        body()  // warm-up: first touch of mapped weights, scratch buffers
        // At least `repeats` runs, and more (up to 200) until they add up to `minimumSeconds`: this
        // machine's speed moves from moment to moment, so short measurements are noisy.
        var times: [Double] = []
        while times.count < max(1, repeats) || (times.reduce(0, +) < minimumSeconds && times.count < 200) {
            let start = ContinuousClock.now
            body()
            times.append((ContinuousClock.now - start).seconds)
        }
        // The mean, not the median: a pipeline pays for the slow steps too.
        return times.reduce(0, +) / Double(times.count)
    }

    private func load(_ parts: ModelParts) throws -> any VisionLanguageModel {
        try configuration.loadModel(weights: weights, parts: parts)
    }

    private func only(layer: Int) -> ModelParts { ModelParts(vision: false, embedding: false, layers: layer..<(layer + 1), outputHead: false) }

    /// Seconds of one forward of `tokens` sequences, one token each, on `model` (fresh caches,
    /// each with one image attached when the layer cross-attends).
    private func stepCurve(_ model: any VisionLanguageModel, image: Tensor?) -> [Double] {
        let width = configuration.language.hiddenSize
        return stepTokens.map { t in
            var caches = (0..<t).map { _ -> SequenceCache in
                var c = model.makeCache()
                if let image { model.attachImage(image, to: &c) }
                return c
            }
            let slices = (0..<t).map { SequenceSlice(rows: $0..<($0 + 1), imageIndex: [image == nil ? nil : 0]) }
            let h = Tensor(Array(repeating: 0.01, count: t * width), shape: [t, width])
            return mean {
                var x = h
                model.forward(&x, slices: slices, caches: &caches)
            }
        }
    }

    /// Seconds per attended pair: a decode step of 4 sequences at `context` against the same step at no context.
    private func attentionSlope(_ model: any VisionLanguageModel, shortStep: Double) -> Double {
        let width = configuration.language.hiddenSize, batch = 4
        var caches = (0..<batch).map { _ in model.makeCache() }
        for i in 0..<batch {
            var prompt = Tensor(Array(repeating: 0.01, count: context * width), shape: [context, width])
            var one = [caches[i]]
            model.forward(&prompt, slices: [SequenceSlice(rows: 0..<context, imageIndex: Array(repeating: nil, count: context))], caches: &one)
            caches[i] = one[0]
        }
        let slices = (0..<batch).map { SequenceSlice(rows: $0..<($0 + 1), imageIndex: [nil]) }
        let h = Tensor(Array(repeating: 0.01, count: batch * width), shape: [batch, width])
        let long = mean {
            var x = h
            model.forward(&x, slices: slices, caches: &caches)
        }
        return max(0, long - shortStep) / Double(batch * context)
    }

    public func measure() throws -> Calibration {
        let config = configuration
        let layers = config.language.layerCount
        let crossLayer = (0..<layers).first(where: config.crossAttends)
        let plainLayer = (0..<layers).first { !config.crossAttends(layer: $0) }
        let width = config.language.hiddenSize
        let image = Tensor(Array(repeating: 0.02, count: config.visualTokensPerImage * config.visualTokenWidth),
                           shape: [config.visualTokensPerImage, config.visualTokenWidth])
        let steps = stepTokens.map(String.init).joined(separator: ",")

        // A decoder layer alone; with a block every layer, the layer with its block counts as one.
        let decoderIndex = plainLayer ?? crossLayer!
        log("decoder layer \(decoderIndex): steps of \(steps) tokens...")
        let decoder = try load(only(layer: decoderIndex))
        let decoderCurve = stepCurve(decoder, image: plainLayer == nil ? image : nil)
        log("decoder layer \(decoderIndex): decode at context \(context)...")
        let slope = attentionSlope(decoder, shortStep: decoderCurve[stepTokens.firstIndex(of: 4) ?? 0])
        var cache = decoder.makeCache()
        var prompt = Tensor(Array(repeating: 0.01, count: 16 * width), shape: [16, width])
        decoder.forward(&prompt, imageIndex: Array(repeating: nil, count: 16), cache: &cache)
        let cachePerToken = cache.byteCount / 16

        var blockCurve = stepTokens.map { _ in 0.0 }
        var attach = 0.0, imageCache = 0
        if let crossLayer {
            let cross = try load(only(layer: crossLayer))
            log("layer \(crossLayer) with its cross-attention block: attach, steps of \(steps) tokens...")
            attach = mean {
                var c = cross.makeCache()
                cross.attachImage(image, to: &c)
            }
            var c = cross.makeCache()
            cross.attachImage(image, to: &c)
            imageCache = c.byteCount
            if plainLayer != nil {
                let both = stepCurve(cross, image: image)
                blockCurve = zip(both, decoderCurve).map { max(0, $0 - $1) }
            }
        }

        log("norm + head: steps of \(steps) rows...")
        let head = try load(ModelParts(vision: false, embedding: false, layers: 0..<0, outputHead: true))
        let headCurve = stepTokens.map { t in
            let h = Tensor(Array(repeating: 0.01, count: t * width), shape: [t, width])
            return mean { _ = head.logits(h) }
        }

        log("vision encoder + resampler: one image...")
        let vision = try load(ModelParts(vision: true, embedding: false, layers: 0..<0, outputHead: false))
        let s = config.imageSize
        let pixels = Tensor((0..<(3 * s * s)).map { Float($0 % 255) / 255 - 0.5 }, shape: [3, s, s])
        let visionSeconds = mean { _ = vision.visualTokens(pixels: pixels) }

        // The parts in sequence, as a stage runs them: embeddings, the layers, the head. A part timed
        // alone over and over does not run as it does in a real step (caches, TLB reach, prefetch,
        // the other parts' weights in between): the parts' costs are scaled so they add up to these
        // measured steps (decode of 1 and 8 sequences, a prefill of 32 tokens), per step size. All
        // the layers when their weights are a few GB (what one rank streams), else the first 4.
        let m = width <= 4096 ? min(layers, 16) : min(layers, 2)
        log("embeddings + layers 0-\(m - 1) + head in sequence: decode and prefill steps...")
        let stack = try load(ModelParts(vision: false, embedding: true, layers: 0..<m, outputHead: true))
        let blocksInStack = Double((0..<m).filter(config.crossAttends).count)
        let curves = (decoder: StepCost(tokens: stepTokens, seconds: decoderCurve, secondsPerAttendedPair: slope),
                      block: StepCost(tokens: stepTokens, seconds: blockCurve), head: StepCost(tokens: stepTokens, seconds: headCurve))
        func predicted(tokens: Int, rows: Int, pairs: Double) -> Double {
            Double(m) * curves.decoder.seconds(tokens: tokens, attendedPairs: pairs) + blocksInStack * curves.block.seconds(tokens: tokens)
                + curves.head.seconds(tokens: rows)
        }
        var factors: [Double] = []
        let token = min(5, config.language.vocabularySize - 1)
        for batch in [1, 8] {
            var caches = (0..<batch).map { _ -> SequenceCache in
                var c = stack.makeCache()
                if crossLayer != nil { stack.attachImage(image, to: &c) }
                return c
            }
            let index: Int? = crossLayer == nil ? nil : 0
            let slices = (0..<batch).map { SequenceSlice(rows: $0..<($0 + 1), imageIndex: [index]) }
            let seconds = mean {
                var h = stack.embed(Array(repeating: token, count: batch))
                stack.forward(&h, slices: slices, caches: &caches)
                _ = stack.logits(h)
            }
            let context = Double(caches[0].length)
            factors.append(seconds / predicted(tokens: batch, rows: batch, pairs: Double(batch) * context))
        }
        let promptLength = 32
        let prefill = mean {
            var c = stack.makeCache()
            if crossLayer != nil { stack.attachImage(image, to: &c) }
            var h = stack.embed(Array(repeating: token, count: promptLength))
            var caches = [c]
            let index: [Int?] = Array(repeating: crossLayer == nil ? nil : 0, count: promptLength)
            stack.forward(&h, slices: [SequenceSlice(rows: 0..<promptLength, imageIndex: index)], caches: &caches)
            _ = stack.logits(h.rows((promptLength - 1)..<promptLength))
        } - (crossLayer == nil ? 0 : attach * blocksInStack)
        factors.append(prefill / predicted(tokens: promptLength, rows: 1, pairs: Double(promptLength * (promptLength + 1) / 2)))
        // Per step size: the 1-token decode's factor up to 1 token, the 8-sequence decode's at 8, the
        // prefill's from 32 on, linear in log2(tokens) between.
        func factor(_ t: Int) -> Double {
            let x = log2(Double(t))
            if x <= 0 { return factors[0] }
            if x <= 3 { return factors[0] + (factors[1] - factors[0]) * x / 3 }
            if x <= 5 { return factors[1] + (factors[2] - factors[1]) * (x - 3) / 2 }
            return factors[2]
        }
        let scales = stepTokens.map(factor)
        log(String(format: "in sequence (%d layers) the parts take %@ of their times alone (decode 1, decode 8, prefill 32)",
                   m, factors.map { String(format: "%.3f", $0) }.joined(separator: ", ")))

        let cpu = CPUFeatures.current
        let simd = cpu.flags.filter { ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni", "neon", "asimd"].contains($0) }
        return Calibration(
            model: name, dtype: dtype,
            machine: .init(cpu: cpu.modelName, features: simd.sorted(), threads: ComputeThreads.count, kernels: KernelTable.active.summary),
            hiddenSize: width, vocabularySize: config.language.vocabularySize,
            visualTokensPerImage: config.visualTokensPerImage, visualTokenWidth: config.visualTokenWidth,
            pixelBytesPerImage: 3 * s * s * 4,
            decoderLayer: StepCost(tokens: stepTokens, seconds: zip(decoderCurve, scales).map { $0 * $1 }, secondsPerAttendedPair: slope),
            crossAttentionBlock: StepCost(tokens: stepTokens, seconds: zip(blockCurve, scales).map { $0 * $1 }),
            outputHead: StepCost(tokens: stepTokens, seconds: zip(headCurve, scales).map { $0 * $1 }),
            visionSecondsPerImage: visionSeconds, imageAttachSecondsPerBlock: attach,
            cacheBytesPerTokenPerLayer: cachePerToken, cacheBytesPerImagePerBlock: imageCache, sequenceScale: scales)
    }

    /// How k = 1...n ranks computing at once on this machine slow each other down. While no more
    /// ranks compute than the cores hold (k·t <= c for t threads each), they compete for memory
    /// bandwidth and caches only: measured, by as many threads as fit decoding steps of one token
    /// on decoder layers of their own at once, against one alone (`rounds` rounds of 1.5 s, the median).
    /// Beyond that the scheduler shares the cores too: k·t/c times slower on top. (Timing more
    /// threads than cores directly gave anything from 1.5 to 3 for k = 3 from run to run: the
    /// scheduler's time slices are as long as a decode step.) Also returns one rank's weight
    /// stream (GB/s) and the best all-core read rate seen, for the record.
    public func sharedHostSlowdown(ranks n: Int, rounds: Int = 3) throws -> (slowdown: [Double], singleGBps: Double, machineGBps: Double) {
        let config = configuration
        let plain = (0..<config.language.layerCount).filter { !config.crossAttends(layer: $0) }
        let pool = plain.isEmpty ? Array(0..<config.language.layerCount) : plain
        let threads = ComputeThreads.count, cores = ProcessInfo.processInfo.activeProcessorCount
        let fit = max(1, min(n, cores / max(1, threads)))
        let models = try (0..<fit).map { try load(only(layer: pool[$0 % pool.count])) }
        let width = config.language.hiddenSize
        let h = Tensor(Array(repeating: 0.01, count: width), shape: [1, width])
        /// Mean step time of k threads decoding at once, counting only steps begun while all run.
        func run(_ k: Int, seconds: Double) -> Double {
            let means = Mutex([Double](repeating: .nan, count: k))
            let ready = DispatchGroup(), done = DispatchGroup()
            let go = DispatchSemaphore(value: 0)
            for i in 0..<k {
                ready.enter()
                done.enter()
                Thread {
                    let model = models[i]
                    var caches = [model.makeCache()]
                    let slices = [SequenceSlice(rows: 0..<1, imageIndex: [nil])]
                    ready.leave()
                    go.wait()
                    let started = ContinuousClock.now
                    var counted: [Double] = []
                    while true {
                        let t0 = ContinuousClock.now
                        let since = (t0 - started).seconds
                        if since >= seconds { break }
                        var x = h
                        model.forward(&x, slices: slices, caches: &caches)
                        if since >= 0.1 && since < seconds - 0.1 { counted.append((ContinuousClock.now - t0).seconds) }
                        if caches[0].length > 256 { caches = [model.makeCache()] }
                    }
                    means.withLock { $0[i] = counted.isEmpty ? .nan : counted.reduce(0, +) / Double(counted.count) }
                    done.leave()
                }.start()
            }
            ready.wait()
            for _ in 0..<k { go.signal() }
            done.wait()
            let m = means.withLock { $0 }.filter { !$0.isNaN }
            return m.reduce(0, +) / Double(max(1, m.count))
        }
        var ratios: [Double] = [], alone: [Double] = []
        for _ in 0..<max(1, rounds) {
            let one = run(1, seconds: 1.5)
            alone.append(one)
            ratios.append(fit > 1 ? run(fit, seconds: 1.5) / one : 1)
        }
        let together = ratios.sorted()[ratios.count / 2]
        let probe = ReadProbe()
        ComputeThreads.configure(cores)
        let machine = probe.measure()
        ComputeThreads.configure(threads)
        let single = Double(models[0].decodeTraffic.bytes) / alone.sorted()[alone.count / 2] / 1e9
        let slowdown = (1...n).map { k -> Double in
            guard k > 1 else { return 1 }
            let cpu = max(1, Double(k * threads) / Double(cores))
            let running = min(k, fit)
            // Bandwidth: measured at `fit` ranks at once, linear in the ranks running in between.
            let bandwidth = fit > 1 ? 1 + (together - 1) * Double(running - 1) / Double(fit - 1) : 1
            return cpu * max(1, bandwidth)
        }
        return (slowdown, single, machine)
    }

    /// This rank's speed probe: one decode step of one token on one decoder layer (median).
    public func speedProbe() throws -> Double {
        let layer = (0..<configuration.language.layerCount).first { !configuration.crossAttends(layer: $0) } ?? 0
        let model = try load(only(layer: layer))
        let width = configuration.language.hiddenSize
        var caches = [model.makeCache()]
        let h = Tensor(Array(repeating: 0.01, count: width), shape: [1, width])
        let slices = [SequenceSlice(rows: 0..<1, imageIndex: [nil])]
        var best = Double.infinity
        for _ in 0..<max(5, repeats) {
            let start = ContinuousClock.now
            var x = h
            model.forward(&x, slices: slices, caches: &caches)
            best = min(best, (ContinuousClock.now - start).seconds)
        }
        return best
    }
}
