import CKernels
import Synchronization

/// A level of kernel instruction families, as `FLAMINGO_KERNELS` names them.
public enum KernelLevel: String, Sendable, CaseIterable {
    /// Plain C for the baseline target (x86-64 SSE2, aarch64): runs everywhere.
    case portable
    /// AVX2 + FMA + F16C.
    case avx2
    /// AVX-512 F/BW/VL/DQ, with the BF16 and VNNI dot instructions where the CPU has them.
    case avx512
}

/// The matmul kernels this process uses: one C family table per weight dtype, chosen once from the
/// CPU's features (llama.cpp's ggml-cpu does the same). `matmul` is the only caller.
public struct KernelTable: @unchecked Sendable, Equatable {
    public let level: KernelLevel
    let f32: fk_kernels
    let f16: fk_kernels
    let bf16: fk_kernels
    let q8: fk_kernels

    public static func == (a: KernelTable, b: KernelTable) -> Bool { a.level == b.level && a.variants == b.variants }

    /// Family name per weight dtype, e.g. `["bf16": "avx512_bf16", "f16": "avx512", ...]`.
    public var variants: [String: String] {
        ["f32": Self.name(f32), "f16": Self.name(f16), "bf16": Self.name(bf16), "q8": Self.name(q8)]
    }

    /// One line for logs and HELLO: "f32=avx512 f16=avx512 bf16=avx512_bf16 q8=avx512_vnni".
    public var summary: String {
        ["f32", "f16", "bf16", "q8"].map { "\($0)=\(variants[$0]!)" }.joined(separator: " ")
    }

    private static func name(_ t: fk_kernels) -> String { String(cString: t.name) }

    /// The naive twins (tests only).
    public static let naive = KernelTable(level: .portable, f32: fk_naive, f16: fk_naive, bf16: fk_naive, q8: fk_naive)

    /// The tables for `level` on `cpu`, or nil when the CPU lacks the level's instructions.
    public static func forLevel(_ level: KernelLevel, cpu: CPUFeatures = .current) -> KernelTable? {
        switch level {
        case .portable:
            return KernelTable(level: level, f32: fk_portable, f16: fk_portable, bf16: fk_portable, q8: fk_portable)
        case .avx2:
            #if arch(x86_64)
            guard cpu.hasAVX2 else { return nil }
            return KernelTable(level: level, f32: fk_avx2, f16: fk_avx2, bf16: fk_avx2, q8: fk_avx2)
            #else
            return nil
            #endif
        case .avx512:
            #if arch(x86_64)
            guard cpu.hasAVX512 else { return nil }
            return KernelTable(level: level, f32: fk_avx512, f16: fk_avx512,
                               bf16: cpu.hasAVX512BF16 ? fk_avx512_bf16 : fk_avx512,
                               q8: cpu.hasAVX512VNNI ? fk_avx512_vnni : fk_avx512)
            #else
            return nil
            #endif
        }
    }

    /// Every instruction family `cpu` can run, each as a table that uses it for every dtype (the
    /// BF16 and VNNI families add only their own member and take the rest from AVX-512): what
    /// `kernel-bench` and the kernel tests compare, one family at a time.
    public static func families(cpu: CPUFeatures = .current) -> [(name: String, table: KernelTable)] {
        var all: [(String, KernelTable)] = [("portable", forLevel(.portable, cpu: cpu)!)]
        #if arch(x86_64)
        if cpu.hasAVX2 { all.append(("avx2", forLevel(.avx2, cpu: cpu)!)) }
        if cpu.hasAVX512 {
            all.append(("avx512", KernelTable(level: .avx512, f32: fk_avx512, f16: fk_avx512, bf16: fk_avx512, q8: fk_avx512)))
            if cpu.hasAVX512BF16 {
                all.append(("avx512_bf16", KernelTable(level: .avx512, f32: fk_avx512, f16: fk_avx512, bf16: fk_avx512_bf16, q8: fk_avx512)))
            }
            if cpu.hasAVX512VNNI {
                all.append(("avx512_vnni", KernelTable(level: .avx512, f32: fk_avx512, f16: fk_avx512, bf16: fk_avx512, q8: fk_avx512_vnni)))
            }
        }
        #endif
        return all
    }

    /// The best level `cpu` can run.
    public static func best(cpu: CPUFeatures = .current) -> KernelTable {
        for level in KernelLevel.allCases.reversed() {
            if let table = forLevel(level, cpu: cpu) { return table }
        }
        preconditionFailure("the portable kernels run everywhere")
    }

    /// The table a `FLAMINGO_KERNELS` value asks for: `portable`, `avx2`, `avx512` or `best`
    /// (unset or empty = best). An unknown value, or a level this CPU cannot run, is an error.
    public static func requested(_ value: String?, cpu: CPUFeatures = .current) throws(KernelSelectionError) -> KernelTable {
        guard let value, !value.isEmpty, value != "best" else { return best(cpu: cpu) }
        guard let level = KernelLevel(rawValue: value) else { throw .unknown(value) }
        guard let table = forLevel(level, cpu: cpu) else { throw .unavailable(level, cpu: cpu.description) }
        return table
    }

    private static let chosen = Mutex<KernelTable?>(nil)

    /// The process's kernels: what `configure` set, else the best the CPU has.
    public static var active: KernelTable {
        chosen.withLock { table in
            if let table { return table }
            let best = best()
            table = best
            return best
        }
    }

    /// Sets the process's kernels from `FLAMINGO_KERNELS` (call once at start-up, before any work).
    @discardableResult
    public static func configureFromEnvironment(_ environment: [String: String]) throws(KernelSelectionError) -> KernelTable {
        let table = try requested(environment["FLAMINGO_KERNELS"])
        chosen.withLock { $0 = table }
        return table
    }
}

public enum KernelSelectionError: Error, CustomStringConvertible, Equatable {
    case unknown(String)
    case unavailable(KernelLevel, cpu: String)

    public var description: String {
        switch self {
        case .unknown(let v):
            "FLAMINGO_KERNELS='\(v)' is not a kernel level (use portable, avx2, avx512 or best)"
        case .unavailable(let level, let cpu):
            "FLAMINGO_KERNELS=\(level.rawValue): this CPU cannot run the \(level.rawValue) kernels (it has: \(cpu))"
        }
    }
}
