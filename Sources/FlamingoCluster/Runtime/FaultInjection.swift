import Foundation
import Synchronization

/// Faults on purpose, for the fault table's tests (docs/faults.md); nothing happens unless the
/// environment asks:
///
///     FLAMINGO_FAULT_HOLD=PHASE:RANK:MS   rank RANK stops for MS ms the first time it enters PHASE
///                                         (load, prefill or decode; on rank 0, which runs the
///                                         engine: admitting the first request, and the first
///                                         logits back), after printing
///                                         "fault: rank RANK holds in PHASE" on stderr, so a test
///                                         can signal it in that phase for sure
///     FLAMINGO_FAULT_FRAME=KIND:RANK:N    rank RANK damages the N-th pipeline frame it sends over
///                                         MPI (N from 1; heartbeats do not count): flip (one bit
///                                         of its payload), truncate (half of it is sent) or step
///                                         (a prefill or decode whose start position is one past
///                                         the sequence's)
///
/// A malformed value is ignored with a line on stderr (this is a test hook, not an option).
public enum FaultInjection {
    public enum Phase: String, Sendable { case load, prefill, decode }
    public enum FrameDamage: String, Sendable { case flip, truncate, step }

    struct Hold { let phase: Phase; let rank: Int; let milliseconds: Int }
    struct Damage { let kind: FrameDamage; let rank: Int; let frame: Int }

    static let hold: Hold? = parse("FLAMINGO_FAULT_HOLD") { parts in
        guard let phase = Phase(rawValue: parts[0]), let rank = Int(parts[1]), let ms = Int(parts[2]), ms >= 0 else { return nil }
        return Hold(phase: phase, rank: rank, milliseconds: ms)
    }
    static let damage: Damage? = parse("FLAMINGO_FAULT_FRAME") { parts in
        guard let kind = FrameDamage(rawValue: parts[0]), let rank = Int(parts[1]), let n = Int(parts[2]), n >= 1 else { return nil }
        return Damage(kind: kind, rank: rank, frame: n)
    }
    private static let held = Mutex(false)

    private static func parse<T>(_ name: String, _ make: ([String]) -> T?) -> T? {
        guard let text = ProcessInfo.processInfo.environment[name], !text.isEmpty else { return nil }
        let parts = text.split(separator: ":").map(String.init)
        if parts.count == 3, let value = make(parts) { return value }
        FileHandle.standardError.write(Data("fault hook \(name)='\(text)' not understood: ignored\n".utf8))
        return nil
    }

    /// Holds here when FLAMINGO_FAULT_HOLD names this phase and rank (the first time only).
    static func enter(_ phase: Phase, rank: Int) {
        guard let hold, hold.phase == phase, hold.rank == rank else { return }
        guard held.withLock({ done -> Bool in defer { done = true }; return !done }) else { return }
        FileHandle.standardError.write(Data("fault: rank \(rank) holds in \(phase.rawValue)\n".utf8))
        usleep(UInt32(min(hold.milliseconds, 600_000)) * 1000)
    }

    /// The damage to do to this rank's `count`-th frame (1-based), if any.
    static func damage(rank: Int, frame count: Int) -> FrameDamage? {
        guard let damage, damage.rank == rank, damage.frame == count else { return nil }
        return damage.kind
    }

    /// `frame` damaged as asked; `.step` is done to the message before encoding (see the transport).
    static func damaged(_ frame: [UInt8], _ kind: FrameDamage) -> [UInt8] {
        switch kind {
        case .flip:
            var f = frame
            if !f.isEmpty { f[f.count - 1 - (f.count / 3)] ^= 0x10 }
            return f
        case .truncate: return Array(frame.prefix(frame.count / 2))
        case .step: return frame
        }
    }
}
