import CKernels
import FlamingoCore

// What the kernel variant tests share: the families this CPU can run (decided by the product's
// own CPUFeatures rules), and a small deterministic generator.

struct KernelFamily {
    let name: String
    let table: fk_kernels
}

/// portable, then every x86 family the CPU can run whose dtype-specific table is `special`
/// (fk_avx512_bf16 for the float tests, fk_avx512_vnni for q8); prints why others are skipped.
func runnableKernelFamilies(_ context: String, special: Special) -> [KernelFamily] {
    var families = [KernelFamily(name: String(cString: fk_portable.name), table: fk_portable)]
    #if arch(x86_64)
    let cpu = CPUFeatures.current
    let specialTable = special == .bf16 ? fk_avx512_bf16 : fk_avx512_vnni
    let specialOK = special == .bf16 ? cpu.hasAVX512BF16 : cpu.hasAVX512VNNI
    let candidates: [(fk_kernels, Bool, String)] = [
        (fk_avx2, cpu.hasAVX2, "avx2 fma f16c"),
        (fk_avx512, cpu.hasAVX512, "avx512f/bw/vl/dq"),
        (specialTable, specialOK, special == .bf16 ? "avx512_bf16" : "avx512_vnni"),
    ]
    for (table, runs, needs) in candidates {
        let name = String(cString: table.name)
        if runs {
            families.append(KernelFamily(name: name, table: table))
        } else {
            print("\(context): skipping \(name): the CPU lacks \(needs) (it has: \(cpu.description))")
        }
    }
    #else
    print("\(context): not x86-64, only the portable family exists")
    #endif
    return families
}

enum Special { case bf16, vnni }

struct Rng {
    var state: UInt64
    /// Uniform in [-1, 1).
    mutating func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(state >> 40) / Float(1 << 23) - 1
    }
    mutating func bits() -> UInt32 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt32(truncatingIfNeeded: state >> 32)
    }
}
