import FlamingoModel
import Foundation
import FuzzSupport

// config.json through the registry (`ModelRegistry.configuration(from:path:)`): `model_type`
// picks the architecture, whose decoder checks every invariant the model code relies on. A
// configuration that decodes is then used as `flamingo info`, `plan` and a load use it before any
// weight is read: its summary, language shape, image geometry, cross-attention placement and
// image masking. It must also write a config.json that reads back equal (`flamingo quantize`
// writes one).

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    withInput(data, size) { json in
        guard let config = try? ModelRegistry.configuration(from: json, path: "fuzz/config.json") else { return }
        _ = config.summary
        let language = config.language
        _ = (config.imageSize, config.visualTokensPerImage, config.visualTokenWidth, config.quantization)
        for layer in 0..<min(language.layerCount, 256) { _ = config.crossAttends(layer: layer) }
        let image = config.imageTokenID ?? max(language.vocabularySize - 1, 0)
        let eos = language.eosTokenIDs.first ?? 2
        _ = config.imageIndices(tokens: [language.bosTokenID ?? 1, image, 5, image, image, eos, 7, image, 8], imageTokenID: image)
        do {
            let written = try JSONEncoder().encode(config)
            let read = try ModelRegistry.configuration(from: written, path: "fuzz/config.json")
            if let a = config as? IdeficsConfig {
                invariant(read as? IdeficsConfig == a, "config.json written from a configuration reads back different")
            }
        } catch {
            invariant(false, "config.json written from a configuration does not read back: \(error)")
        }
    }
    return 0
}

@main struct ModelConfigFuzz {
    static func main() { FuzzMain.run(testOneInput) }
}
