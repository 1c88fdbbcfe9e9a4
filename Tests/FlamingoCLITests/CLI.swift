import Foundation
import Testing

/// Runs the built `flamingo` binary ($FLAMINGO_BIN, else .build/release, else .build/debug).
enum CLI {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = repo.appendingPathComponent("Tests/Fixtures")
    static let models = fixtures.appendingPathComponent("models")

    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["FLAMINGO_BIN"] { return path }
        for config in ["release", "debug"] {
            let path = repo.appendingPathComponent(".build/\(config)/flamingo").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return "flamingo"
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        /// True when the process ended by a signal (a crash), not by exit().
        let crashed: Bool
        var stderrLines: [Substring] { stderr.split(separator: "\n", omittingEmptySubsequences: true) }
    }

    static func run(_ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 120,
                    executable: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable ?? binary)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = env["OPENBLAS_CORETYPE"] ?? "Haswell"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Drain both pipes while the process runs so a chatty child never blocks on a full pipe.
        let outData = UncheckedBox(Data()), errData = UncheckedBox(Data())
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outData.value = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData.value = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            process.terminate()
            Issue.record("flamingo \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        process.waitUntilExit()
        group.wait()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData.value, as: UTF8.self),
                      stderr: String(decoding: errData.value, as: UTF8.self),
                      crashed: process.terminationReason == .uncaughtSignal)
    }

    /// A scratch copy of fixture model `name` that a test may damage.
    static func scratchModel(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flamingo-test-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: models.appendingPathComponent(name), to: dir)
        return dir
    }
}

final class UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

/// Reads and rewrites a safetensors file's header, for making broken checkpoints.
struct SafetensorsEditor {
    var header: [String: Any]
    var data: Data

    init(_ url: URL) throws {
        let bytes = try Data(contentsOf: url)
        let length = bytes.prefix(8).withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self).littleEndian) }
        header = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + length))) as! [String: Any]
        data = bytes.subdata(in: (8 + length)..<bytes.count)
    }

    func write(_ url: URL) throws {
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(data)
        try out.write(to: url)
    }

    mutating func edit(_ name: String, _ body: (inout [String: Any]) -> Void) {
        var entry = header[name] as! [String: Any]
        body(&entry)
        header[name] = entry
    }
}
