import Foundation
import Testing

// Issue 14: request bodies past the limit, `Expect: 100-continue` and idle connections against a
// real `flamingo serve --model models/demo`, driven by scripts/test-client/limits.py with urllib,
// requests, httpx, the openai client, curl and raw sockets. The script's bounds are "no hang"
// bounds: an answer within 5 s where the clients' own timeouts are 60 s.

struct LimitsReport: Decodable {
    struct Check: Decodable { let name: String; let ok: Bool; let detail: String }
    let checks: [Check]
    let measurements: [String: Double]
}

extension ServeTests {
/// In the serialized `ServeTests` suite: 1000 connections and 64 MiB bodies want the machine to themselves.
@Test func bodyLimitsExpectContinueAndIdleConnections() throws {
    try #require(Python.has("openai, requests, httpx"), "the Python test clients are missing: scripts/setup --test-client")
    let demo = CLI.repo.appendingPathComponent("models/demo")
    let key = "test-key-\(UUID().uuidString)"
    let idleTimeout = 3
    let server = try ServeProcess(["--model", demo.path, "--chat-template", "plain", "--threads", "1",
                                   "--idle-timeout", "\(idleTimeout)"], environment: ["FLAMINGO_API_KEY": key])
    let r = try Python.run("limits.py", ["--url", server.url, "--api-key", key, "--idle-timeout", "\(idleTimeout)",
                                         "--image", demo.appendingPathComponent("examples/three_blue_triangles.png").path,
                                         "--idle-connections", "1000"], timeout: 300)
    guard let report = try? JSONDecoder().decode(LimitsReport.self, from: Data(r.stdout.utf8)) else {
        Issue.record("limits.py printed no report (status \(r.status)): \(r.stdout)\n\(r.stderr)\nserver: \(server.errorOutput)")
        return
    }
    print("limits: " + report.measurements.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
    for check in report.checks where !check.ok {
        Issue.record("\(check.name): \(check.detail)")
    }
    #expect(report.checks.count >= 15)
    #expect(r.status == (report.checks.allSatisfy(\.ok) ? 0 : 1))

    // SIGTERM: a clean exit 0, nothing left running, nothing logged as an error.
    #expect(server.terminate() == 0, "\(server.errorOutput)")
    #expect(server.survivors.isEmpty, "still running: \(server.survivors)")
    #expect(!server.errorOutput.lowercased().contains("error"), "\(server.errorOutput)")
}

/// An open-file limit too low for --max-connections: one warning line saying what the server does
/// instead and how to raise it; the server still serves.
@Test func lowOpenFileLimitIsWarnedAbout() throws {
    let server = try ServeProcess(["--model", model, "--threads", "1", "--max-connections", "1000"], openFileLimit: 300)
    let warnings = server.errorOutput.split(separator: "\n").filter { $0.contains("open-file limit") }
    #expect(warnings.count == 1, "\(server.errorOutput)")
    #expect(warnings.first?.contains("warning") == true, "\(server.errorOutput)")
    #expect(warnings.first?.contains("ulimit -n") == true, "\(server.errorOutput)")
    #expect(warnings.first?.contains("instead of --max-connections 1000") == true, "\(server.errorOutput)")
    #expect(try CLI.get("http://127.0.0.1:\(server.port)/health").0 == 200)
    #expect(server.terminate() == 0, "\(server.errorOutput)")
}
}
