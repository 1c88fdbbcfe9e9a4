import CKernels
import FlamingoCore

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the frame checksum.
/// Slicing-by-8: eight 256-entry tables let each step fold in 8 input bytes with 8 lookups.
/// Check value: CRC32C("123456789") == 0xE3069283.
public enum CRC32C {
    /// The CRC of `bytes`; pass a previous result as `previous` to continue over more bytes. With
    /// SSE4.2 (and a kernel level other than `portable`) the crc32 instruction, about 10x the
    /// portable loop; the same value either way.
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
        guard useInstruction, let base = bytes.baseAddress else { return portable(bytes, continuing: previous) }
        return fk_crc32c_sse42(base, bytes.count, previous)
    }

    /// Whether `checksum` uses the CPU's crc32 instruction.
    public static var useInstruction: Bool { instructionAvailable && KernelTable.active.level != .portable }
    private static let instructionAvailable = CPUFeatures.current.flags.contains("sse4_2")

    /// Slicing-by-8 in portable Swift (the reference, and the path without SSE4.2).
    public static func portable(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
        var crc = ~previous
        guard var p = bytes.baseAddress else { return previous }
        var n = bytes.count
        tables.withUnsafeBufferPointer { t in
            while n >= 8 {
                let word = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
                let lo = UInt32(truncatingIfNeeded: word) ^ crc
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                crc = t[7 &* 256 &+ Int(lo & 0xFF)]
                    ^ t[6 &* 256 &+ Int((lo >> 8) & 0xFF)]
                    ^ t[5 &* 256 &+ Int((lo >> 16) & 0xFF)]
                    ^ t[4 &* 256 &+ Int(lo >> 24)]
                    ^ t[3 &* 256 &+ Int(hi & 0xFF)]
                    ^ t[2 &* 256 &+ Int((hi >> 8) & 0xFF)]
                    ^ t[1 &* 256 &+ Int((hi >> 16) & 0xFF)]
                    ^ t[Int(hi >> 24)]
                p += 8
                n -= 8
            }
            while n > 0 {
                crc = t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
                p += 1
                n -= 1
            }
        }
        return ~crc
    }

    public static func checksum(_ bytes: [UInt8], continuing previous: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: previous) }
    }

    /// `tables[k * 256 + b]`: the CRC of byte `b` followed by `k` zero bytes.
    private static let tables: [UInt32] = {
        let polynomial: UInt32 = 0x82F6_3B78
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for b in 0..<256 {
            var crc = UInt32(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ polynomial : crc >> 1 }
            t[b] = crc
        }
        for k in 1..<8 {
            for b in 0..<256 {
                let previous = t[(k - 1) * 256 + b]
                t[k * 256 + b] = (previous >> 8) ^ t[Int(previous & 0xFF)]
            }
        }
        return t
    }()
}
