import Testing
import FlamingoCore

@Test func bf16RoundTrip() {
    for v: Float in [0, 1, -2.5, 3.140625, 1e-3] {
        #expect(abs(bf16ToFloat(floatToBF16(v)) - v) <= abs(v) / 128)
    }
}
