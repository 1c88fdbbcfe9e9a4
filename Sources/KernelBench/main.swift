// Kernel benchmark (dev-time; `scripts/bench/kernels` builds and runs it): every matmul kernel
// family this CPU can run, per weight format, through the product's own `matmul` (threads and
// activation preparation included), against the machine's ceilings measured in the same rounds:
//
//   decode   T = 1 (GEMV) over >= 1 GB of weights: GB/s of weights streamed, and its fraction of
//            the memory-read bandwidth ReadProbe measures right before and right after it;
//            "one matrix" is a single [N, K] matrix of that size, "layers" the same bytes as
//            decode meets them (a sequence of [2048, 2048]..[5632, 2048] matrices, one call each).
//   prefill  T = 128 rows (--prefill-rows) against a [4096, 4096] matrix (--prefill-shape N,K):
//            GFLOP/s (GOP/s for int8), and its
//            fraction of the peak of the instruction that family's inner loop is built on
//            (flamingo_probes.h), measured on every thread in the same round.
//
// Interleaved rounds; each figure is the median over rounds of the per-round value (fractions are
// per-round ratios). Output: a table, and JSON with --json FILE.
import CKernels
import FlamingoCore
import Foundation

struct Options {
    var gigabytes = 1.0
    var rounds = 3
    var threads = ProcessInfo.processInfo.activeProcessorCount
    var prefillRows = 128
    var prefillShape = (n: 4096, k: 4096)
    var formats: [WeightFormat] = [.bf16, .int8, .f16, .f32]
    var families: [String]? = nil
    var json: String? = nil

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        var i = 0
        func value() -> String {
            i += 1
            guard i < args.count else { fail("\(args[i - 1]) needs a value") }
            return args[i]
        }
        func number<T: LosslessStringConvertible>(_ what: String) -> T {
            guard let v = T(value()) else { fail("\(what) needs a number") }
            return v
        }
        while i < args.count {
            switch args[i] {
            case "--gb": o.gigabytes = number("--gb")
            case "--rounds": o.rounds = number("--rounds")
            case "--threads": o.threads = number("--threads")
            case "--prefill-rows": o.prefillRows = number("--prefill-rows")
            case "--prefill-shape":
                let parts = value().split(separator: ",").compactMap { Int($0) }
                guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { fail("--prefill-shape needs N,K (positive)") }
                o.prefillShape = (parts[0], parts[1])
            case "--formats":
                o.formats = value().split(separator: ",").map { name in
                    guard let format = WeightFormat(name: String(name)) else { fail("unknown format \(name)") }
                    return format
                }
            case "--families": o.families = value().split(separator: ",").map(String.init)
            case "--json": o.json = value()
            case "-h", "--help":
                print("""
                usage: KernelBench [--gb 1.0] [--rounds 3] [--threads N] [--prefill-rows 128] [--prefill-shape 4096,4096]
                                   [--formats bf16,int8,f16,f32] [--families portable,avx2,...] [--json FILE]
                """)
                exit(0)
            default: fail("unknown argument \(args[i])")
            }
            i += 1
        }
        guard o.gigabytes > 0, o.rounds > 0, o.threads > 0, o.prefillRows > 0 else { fail("values must be positive") }
        return o
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(2)
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? .nan : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// The instruction a family's inner loop for `format` is built on (what its GEMM is compared to).
func peakInstruction(family: String, format: WeightFormat) -> fk_peak_instruction {
    switch (family, format) {
    case ("portable", _): return FK_PEAK_FMA_F32_SSE
    case ("avx2", .int8): return FK_PEAK_MADDUBS_AVX2
    case ("avx2", _): return FK_PEAK_FMA_F32_AVX2
    case ("avx512_vnni", .int8): return FK_PEAK_DPBUSD_AVX512
    case ("avx512_bf16", .bf16): return FK_PEAK_DPBF16_AVX512
    case (_, .int8): return FK_PEAK_MADDUBS_AVX512
    default: return FK_PEAK_FMA_F32_AVX512
    }
}

func instructionName(_ i: fk_peak_instruction) -> String {
    switch i {
    case FK_PEAK_FMA_F32_SSE: "mulps+addps xmm"
    case FK_PEAK_FMA_F32_AVX2: "vfmadd231ps ymm"
    case FK_PEAK_FMA_F32_AVX512: "vfmadd231ps zmm"
    case FK_PEAK_DPBF16_AVX512: "vdpbf16ps zmm"
    case FK_PEAK_MADDUBS_AVX2: "vpmaddubsw ymm"
    case FK_PEAK_MADDUBS_AVX512: "vpmaddubsw zmm"
    case FK_PEAK_DPBUSD_AVX512: "vpdpbusd zmm"
    default: "?"
    }
}

/// Whether a family has its own kernel for `format` (the BF16 and VNNI families add one each).
func familyApplies(_ family: String, _ format: WeightFormat) -> Bool {
    switch family {
    case "avx512_bf16": format == .bf16
    case "avx512_vnni": format == .int8
    default: true
    }
}

/// A weight matrix [n, k] in `format` with plausible values (normal floats, small int8 scales).
func makeWeights(_ format: WeightFormat, n: Int, k: Int, seed: UInt64) -> WeightMatrix {
    var state = seed | 1
    func next() -> UInt64 { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state }
    let pattern = 1 << 16
    switch format {
    case .f32, .f16, .bf16:
        let dtype: DType = format == .f32 ? .f32 : format == .f16 ? .f16 : .bf16
        var t = Tensor(zeros: [n, k], dtype: dtype)
        let floats = (0..<pattern).map { _ in Float(Int(next() % 2001) - 1000) / 16000 }
        let src = Tensor(floats, shape: [pattern]).converted(to: dtype)
        t.withUnsafeMutableRawBytes { dst in
            src.withUnsafeRawBytes { s in
                var off = 0
                while off < dst.count {
                    let c = min(s.count, dst.count - off)
                    (dst.baseAddress! + off).copyMemory(from: s.baseAddress!, byteCount: c)
                    off += c
                }
            }
        }
        return WeightMatrix(t)
    case .int8:
        var values = Tensor(zeros: [n, k], dtype: .i8)
        var scales = Tensor(zeros: [n, WeightMatrix.blockCount(k)], dtype: .f16)
        let bytes = (0..<pattern).map { _ in UInt8(truncatingIfNeeded: Int(next() % 255) - 127) }
        values.withUnsafeMutableRawBytes { dst in
            var off = 0
            while off < dst.count {
                let c = min(bytes.count, dst.count - off)
                bytes.withUnsafeBytes { (dst.baseAddress! + off).copyMemory(from: $0.baseAddress!, byteCount: c) }
                off += c
            }
        }
        let scale = fk_f32_to_f16(0.002)
        scales.withUnsafeMutableRawBytes { dst in
            let p = dst.bindMemory(to: UInt16.self)
            for i in 0..<p.count { p[i] = scale }
        }
        return WeightMatrix(int8Values: values, scales: scales)
    }
}

/// Seconds of the fastest of `repeats` calls of `body`.
func fastest(_ repeats: Int, _ body: () -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<repeats {
        let start = Date()
        body()
        best = min(best, Date().timeIntervalSince(start))
    }
    return best
}

struct Case {
    let format: WeightFormat
    let family: String
    let table: KernelTable
    var decodeOne: [Double] = []     // GB/s, one matrix
    var decodeLayers: [Double] = []  // GB/s, layer-sized matrices
    var decodeOneFraction: [Double] = []
    var decodeLayersFraction: [Double] = []
    var prefill: [Double] = []       // GFLOP/s
    var prefillFraction: [Double] = []
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
ComputeThreads.configure(options.threads)
let cpu = CPUFeatures.current
let wanted = options.families.map(Set.init)
let families = KernelTable.families(cpu: cpu).filter { wanted?.contains($0.name) ?? true }
if let wanted, wanted.count != families.count {
    fail("families \(wanted.sorted()) not all available on this CPU (it has \(KernelTable.families(cpu: cpu).map(\.name)))")
}

print("cpu: \(cpu.description)")
print("threads: \(options.threads), rounds: \(options.rounds), decode weights: \(options.gigabytes) GB per format, prefill: \(options.prefillRows) rows against [\(options.prefillShape.n), \(options.prefillShape.k)]")

let k = 4096
let layerShapes: [(n: Int, k: Int)] = [(2048, 2048), (2048, 2048), (2048, 2048), (2048, 2048), (5632, 2048), (5632, 2048), (2048, 5632)]
var cases: [Case] = []
for format in options.formats {
    for f in families where familyApplies(f.name, format) { cases.append(Case(format: format, family: f.name, table: f.table)) }
}

print("allocating weights...", terminator: "")
var decodeWeights: [WeightFormat: WeightMatrix] = [:]
var layerWeights: [WeightFormat: [WeightMatrix]] = [:]
var prefillWeights: [WeightFormat: WeightMatrix] = [:]
for format in options.formats {
    let rows = Int(options.gigabytes * 1e9) / format.rowBytes(k) / 16 * 16
    decodeWeights[format] = makeWeights(format, n: rows, k: k, seed: 1)
    var layers: [WeightMatrix] = []
    var bytes = 0
    var s: UInt64 = 2
    while Double(bytes) < options.gigabytes * 1e9 {
        for shape in layerShapes {
            let w = makeWeights(format, n: shape.n, k: shape.k, seed: s)
            s += 1
            bytes += w.byteCount
            layers.append(w)
        }
    }
    layerWeights[format] = layers
    prefillWeights[format] = makeWeights(format, n: options.prefillShape.n, k: options.prefillShape.k, seed: 99)
    print(" \(format.rawValue)", terminator: "")
}
print("")
let probe = ReadProbe()
let x = (0..<(options.prefillRows * max(5632, options.prefillShape.k))).map { Float(($0 * 7919) % 2001 - 1000) / 1000 }
var out = [Float](repeating: 0, count: options.prefillRows * max(5632, options.prefillShape.n))

var readFigures: [Double] = []
var peakFigures: [String: [Double]] = [:]
for round in 1...options.rounds {
    // Rotate the order every round so no case always runs first (or right after another).
    let order = (0..<cases.count).map { (($0 + round - 1) % cases.count) }
    for index in order {
        var c = cases[index]
        let w = decodeWeights[c.format]!
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                let before = probe.measure(repeats: 2)
                let one = fastest(3) {
                    matmul(out: op.baseAddress!, x: xp.baseAddress!, weight: w, t: 1, k: w.columns, n: w.rows, kernels: c.table)
                }
                let layers = layerWeights[c.format]!
                let many = fastest(3) {
                    for m in layers {
                        matmul(out: op.baseAddress!, x: xp.baseAddress!, weight: m, t: 1, k: m.columns, n: m.rows, kernels: c.table)
                    }
                }
                let after = probe.measure(repeats: 2)
                let read = (before + after) / 2
                readFigures.append(contentsOf: [before, after])
                c.decodeOne.append(Double(w.byteCount) / one / 1e9)
                c.decodeLayers.append(Double(layers.reduce(0) { $0 + $1.byteCount }) / many / 1e9)
                c.decodeOneFraction.append(c.decodeOne.last! / read)
                c.decodeLayersFraction.append(c.decodeLayers.last! / read)

                let pw = prefillWeights[c.format]!
                let t = options.prefillRows
                let instruction = peakInstruction(family: c.family, format: c.format)
                let seconds = fastest(2) {
                    matmul(out: op.baseAddress!, x: xp.baseAddress!, weight: pw, t: t, k: pw.columns, n: pw.rows, kernels: c.table)
                }
                let peak = MachineLimits.instructionPeak(instruction, repeats: 2)
                peakFigures[instructionName(instruction), default: []].append(peak)
                c.prefill.append(2 * Double(t * pw.rows * pw.columns) / seconds / 1e9)
                c.prefillFraction.append(c.prefill.last! / peak)
            }
        }
        cases[index] = c
    }
    FileHandle.standardError.write(Data("round \(round)/\(options.rounds) done\n".utf8))
}

func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
print("")
print("memory read (ReadProbe, all threads): median \(f(median(readFigures))) GB/s, range \(f(readFigures.min() ?? 0))-\(f(readFigures.max() ?? 0))")
for (name, figures) in peakFigures.sorted(by: { $0.key < $1.key }) {
    print("peak \(name): median \(f(median(figures))) G ops/s")
}
print("")
print("format  family        decode GB/s  of read  | layers GB/s  of read | prefill G ops/s  of peak  (instruction)")
for c in cases {
    let inst = instructionName(peakInstruction(family: c.family, format: c.format))
    func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
    print(pad(c.format.rawValue, 7) + " " + pad(c.family, 13) + String(format: " %11.1f  %6.0f%%  | %11.1f  %6.0f%% | %15.1f  %6.0f%%  (",
                 median(c.decodeOne), 100 * median(c.decodeOneFraction), median(c.decodeLayers), 100 * median(c.decodeLayersFraction),
                 median(c.prefill), 100 * median(c.prefillFraction)) + inst + ")")
}

/// `--json FILE`: the machine's ceilings and every case's medians.
struct Report: Encodable {
    struct Row: Encodable {
        let format: String
        let family: String
        let decodeGBps: Double
        let decodeFractionOfRead: Double
        let decodeLayersGBps: Double
        let decodeLayersFractionOfRead: Double
        let prefillGOPs: Double
        let prefillFractionOfPeak: Double
        let peakInstruction: String

        enum CodingKeys: String, CodingKey {
            case format, family, decodeGBps = "decode_gbps", decodeFractionOfRead = "decode_fraction_of_read",
                 decodeLayersGBps = "decode_layers_gbps", decodeLayersFractionOfRead = "decode_layers_fraction_of_read",
                 prefillGOPs = "prefill_gops", prefillFractionOfPeak = "prefill_fraction_of_peak", peakInstruction = "peak_instruction"
        }
    }

    let cpu: String
    let threads: Int
    let rounds: Int
    let readGBpsMedian: Double
    /// Median peak per instruction.
    let peaksGOPs: [String: Double]
    let cases: [Row]

    enum CodingKeys: String, CodingKey {
        case cpu, threads, rounds, readGBpsMedian = "read_gbps_median", peaksGOPs = "peaks_gops", cases
    }
}

if let path = options.json {
    let rows = cases.map { c in
        Report.Row(
            format: c.format.rawValue, family: c.family,
            decodeGBps: median(c.decodeOne), decodeFractionOfRead: median(c.decodeOneFraction),
            decodeLayersGBps: median(c.decodeLayers), decodeLayersFractionOfRead: median(c.decodeLayersFraction),
            prefillGOPs: median(c.prefill), prefillFractionOfPeak: median(c.prefillFraction),
            peakInstruction: instructionName(peakInstruction(family: c.family, format: c.format)))
    }
    let doc = Report(cpu: cpu.description, threads: options.threads, rounds: options.rounds,
                     readGBpsMedian: median(readFigures), peaksGOPs: peakFigures.mapValues(median), cases: rows)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(doc).write(to: URL(fileURLWithPath: path))
    print("wrote \(path)")
}
