import Foundation
import Testing

// A bounded soak of `flamingo serve` (issue 5's acceptance): 16 concurrent openai clients on
// loopback for 60 s ($FLAMINGO_SOAK_SECONDS), mixing plain, streamed and abandoned-mid-stream
// requests. No request may fail, resident memory may grow by at most 32 MiB after a 5 s warm-up,
// and afterwards /metrics shows no sequence left active (abandoned streams were cancelled).

struct SoakReport: Decodable {
    struct Metrics: Decodable { let active: Double?; let queued: Double?; let in_flight: Double? }
    let requests: Int
    let failures: [String]
    let by_mode: [String: Int]
    let rss_warm_kib: Int?
    let rss_end_kib: Int
    let rss_max_kib: Int
    let metrics: Metrics
}

extension ServeTests {
/// In the serialized `ServeTests` suite: the soak loads both cores, so no other server test runs beside it.
@Test func soakSixteenClients() throws {
    try #require(Python.hasOpenAI, "the openai Python package is missing: pip install openai (scripts/setup installs it)")
    let seconds = ProcessInfo.processInfo.environment["FLAMINGO_SOAK_SECONDS"].flatMap(Double.init) ?? 60
    let server = try ServeProcess(["--model", model, "--threads", "1"])
    let r = try Python.run("soak.py", ["--url", server.url, "--pid", "\(server.process.processIdentifier)",
                                       "--images", CLI.models.appendingPathComponent("images").path,
                                       "--clients", "16", "--seconds", "\(seconds)"], timeout: seconds + 120)
    guard let report = try? JSONDecoder().decode(SoakReport.self, from: Data(r.stdout.utf8)) else {
        Issue.record("soak.py printed no report (status \(r.status)): \(r.stdout)\n\(r.stderr)")
        return
    }
    print("soak: \(report.requests) requests in \(seconds) s \(report.by_mode), RSS \(report.rss_warm_kib ?? -1) -> \(report.rss_end_kib) KiB (max \(report.rss_max_kib))")
    #expect(report.failures.isEmpty, "\(report.failures.prefix(5))")
    #expect(report.requests >= 16)
    #expect((report.by_mode["abandon"] ?? 0) > 0)
    let warm = try #require(report.rss_warm_kib)
    #expect(report.rss_end_kib - warm <= 32 * 1024, "RSS grew from \(warm) to \(report.rss_end_kib) KiB")
    #expect(report.metrics.active == 0 && report.metrics.queued == 0 && report.metrics.in_flight == 0, "\(report.metrics)")
    #expect(server.terminate() == 0)
}
}
