import CFuzzDriver
import Foundation

/// A fuzz target's body: libFuzzer's `LLVMFuzzerTestOneInput` (return 0; crash on a bug).
public typealias FuzzBody = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// The entry point every fuzz target's `@main` calls (Fuzz/Targets/*, scripts/fuzz).
///
/// One source builds two ways, with no `#if`:
/// - by `scripts/fuzz` with `-sanitize=fuzzer,address`: libFuzzer is linked in, and `run` hands
///   it the command line (`-max_total_time=…`, corpus directories, ...);
/// - by a normal `swift build`: there is no libFuzzer, and `run` replays the files and
///   directories it is given through the same body once each: a regression runner for the
///   committed corpus (scripts/test) and a way to reproduce a finding in a debugger.
///
/// `seeds`, when given, makes real inputs with the product's own encoders:
/// `fuzz-NAME --make-seeds DIR` writes them (how parts of Fuzz/corpus/NAME were made).
public enum FuzzMain {
    public static func run(_ body: FuzzBody, seeds: (() throws -> [(name: String, bytes: Data)])? = nil) -> Never {
        let arguments = CommandLine.arguments
        if let i = arguments.firstIndex(of: "--make-seeds") {
            guard let seeds, i + 1 < arguments.count else { fail("--make-seeds DIR: this target makes no seeds, or DIR is missing") }
            exit(writeSeeds(seeds, to: URL(fileURLWithPath: arguments[i + 1])))
        }
        if flamingo_fuzz_driver_available() != 0 {
            var argc = CommandLine.argc
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
            exit(flamingo_fuzz_run_driver(&argc, &argv, body))
        }
        exit(replay(body, paths: arguments.dropFirst().filter { !$0.hasPrefix("-") }))
    }

    /// Inputs slower than this are reported, as libFuzzer's `-timeout` would (scripts/fuzz uses 10 s).
    static let slowInputSeconds = 10.0

    private static func replay(_ body: FuzzBody, paths: [String]) -> Int32 {
        guard !paths.isEmpty else {
            fail("usage: \(CommandLine.arguments[0]) FILE|DIR... (replays each input once; built with scripts/fuzz it fuzzes)")
        }
        let fm = FileManager.default
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else { fail("no such file or directory: \(path)") }
            if isDirectory.boolValue {
                let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
                files += names.sorted().map { (path as NSString).appendingPathComponent($0) }
                    .filter { fm.fileExists(atPath: $0, isDirectory: &isDirectory) && !isDirectory.boolValue }
            } else {
                files.append(path)
            }
        }
        let start = Date()
        var slow: [(String, Double)] = []
        for file in files {
            guard let data = fm.contents(atPath: file) else { fail("cannot read \(file)") }
            let t0 = Date()
            flamingo_fuzz_set_current_input(file)
            data.withUnsafeBytes { raw in
                _ = body(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count)
            }
            flamingo_fuzz_set_current_input(nil)
            let seconds = Date().timeIntervalSince(t0)
            if seconds > slowInputSeconds { slow.append((file, seconds)) }
        }
        let name = (CommandLine.arguments[0] as NSString).lastPathComponent
        for (file, seconds) in slow {
            FileHandle.standardError.write(Data("\(name): input \(file) took \(String(format: "%.1f", seconds)) s (over \(slowInputSeconds) s: a hang)\n".utf8))
        }
        print("\(name): replayed \(files.count) inputs in \(String(format: "%.1f", Date().timeIntervalSince(start))) s, no crash\(slow.isEmpty ? "" : ", \(slow.count) too slow")")
        return slow.isEmpty ? 0 : 1
    }

    private static func writeSeeds(_ seeds: () throws -> [(name: String, bytes: Data)], to directory: URL) -> Int32 {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let made = try seeds()
            for seed in made { try seed.bytes.write(to: directory.appendingPathComponent(seed.name)) }
            print("wrote \(made.count) seeds to \(directory.path)")
            return 0
        } catch {
            fail("making seeds: \(error)")
        }
    }

    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(2)
    }
}

/// Files the targets read besides their input (the test fixtures' model directories), found
/// from this source file's place in the repository.
public enum FuzzFixtures {
    public static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let models = repository.appendingPathComponent("Tests/Fixtures/models")
    public static let images = repository.appendingPathComponent("Tests/Fixtures/images")
}

/// The input as `Data` without copying it (valid only during the call).
public func withInput<R>(_ data: UnsafePointer<UInt8>?, _ size: Int, _ body: (Data) throws -> R) rethrows -> R {
    guard let data, size > 0 else { return try body(Data()) }
    return try body(Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: data), count: size, deallocator: .none))
}

/// A broken invariant of the code under test: a finding, as a crash libFuzzer records.
public func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("fuzz invariant broken: \(message())") }
}
