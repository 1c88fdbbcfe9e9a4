import Foundation

/// The CPU's SIMD features, read once from /proc/cpuinfo (Linux), for kernel choice and reports.
public struct CPUFeatures: Sendable, CustomStringConvertible {
    public let flags: Set<String>
    public let modelName: String

    public static let current = CPUFeatures()

    init() {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        var flags: Set<String> = []
        var model = "unknown"
        for line in info.split(separator: "\n") {
            if line.hasPrefix("flags"), flags.isEmpty, let colon = line.firstIndex(of: ":") {
                flags = Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
            } else if line.hasPrefix("model name"), model == "unknown", let colon = line.firstIndex(of: ":") {
                model = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        self.flags = flags
        self.modelName = model
    }

    /// A CPU described by its /proc/cpuinfo flags (tests of kernel selection).
    public init(flags: Set<String>, modelName: String = "test") {
        self.flags = flags
        self.modelName = modelName
    }

    /// What the `avx2` kernel family needs: AVX2, FMA and F16C.
    public var hasAVX2: Bool { flags.isSuperset(of: ["avx2", "fma", "f16c"]) }
    /// What the `avx512` kernel family needs: AVX-512 F, BW, VL and DQ (Skylake-X, Zen 4 and later).
    public var hasAVX512: Bool { hasAVX2 && flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) }
    public var hasAVX512BF16: Bool { hasAVX512 && flags.contains("avx512_bf16") }
    public var hasAVX512VNNI: Bool { hasAVX512 && flags.contains("avx512_vnni") }
    public var hasF16C: Bool { flags.contains("f16c") }

    /// The features that matter for our kernels, e.g. "avx2 fma f16c".
    public var description: String {
        let interesting = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "amx_bf16"]
        let present = interesting.filter { flags.contains($0) }
        return present.isEmpty ? "none of avx2/avx512" : present.joined(separator: " ")
    }
}
