import FlamingoCore
import Foundation

/// A Hugging Face `tokenizer.json` tokenizer (the LLaMA/IDEFICS family: SentencePiece-style
/// BPE with byte fallback), producing the same ids as the Rust `tokenizers` library.
///
/// Encoding follows the HF pipeline:
/// 1. split out added tokens that match the raw text (`normalized: false`, e.g. `<image>`);
/// 2. normalise each remaining piece, then split out `normalized: true` added tokens;
/// 3. pre-tokenize into words; 4. BPE each word; 5. post-process (`<s>` for LLaMA).
///
/// Decoding maps ids to token strings and runs the decoder chain (byte fallback, "▁" → " ",
/// strip). All configuration is validated at load, so `encode`/`decode` cannot fail.
/// The value is immutable and `Sendable`; share one instance across tasks.
public struct Tokenizer: Sendable {
    /// Largest id in the vocabulary or added tokens, plus one (the embedding-table rows needed).
    public let vocabularySize: Int
    /// Beginning-of-sequence id (`bos_token` of tokenizer_config.json, else `<s>` if present).
    public let bosTokenID: Int?
    /// End-of-sequence id (`eos_token` of tokenizer_config.json, else `</s>` if present).
    public let eosTokenID: Int?

    let addedVocabulary: AddedVocabulary
    let normalizer: (any Normalizer)?
    let preTokenizer: (any PreTokenizer)?
    let model: any TokenizerModel
    let postProcessor: (any PostProcessor)?
    let decoder: (any TokenDecoder)?
    /// id → token string for decoding: added tokens override model tokens, as in HF.
    /// Special-token skipping compares these strings with the special contents, as HF does,
    /// so a `normalized: true` special token whose normalised form differs is not skipped.
    let tokensByID: [Int: String]

    /// Loads `tokenizer.json` at `url` (or `url/tokenizer.json` when `url` is a directory) and,
    /// if present, `tokenizer_config.json` next to it.
    public init(contentsOf url: URL) throws {
        var isDirectory: ObjCBool = false
        var file = url
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            file = url.appendingPathComponent("tokenizer.json")
        }
        let data = try Self.read(file)
        let configURL = file.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        let configData = FileManager.default.fileExists(atPath: configURL.path) ? try Self.read(configURL) : nil
        try self.init(data: data, configData: configData)
    }

    /// Loads from the bytes of a tokenizer.json and, optionally, of a tokenizer_config.json.
    ///
    /// The config supplies `bos_token`/`eos_token`. Its `add_bos_token`/`add_eos_token` are
    /// used only when tokenizer.json has no `post_processor`; otherwise the post-processor is
    /// authoritative, which is what `PreTrainedTokenizerFast` does.
    public init(data: Data, configData: Data? = nil) throws {
        let root: JSON
        do {
            root = try JSON.parse(data)
        } catch {
            throw TokenizerError.invalidJSON(error.description)
        }
        guard case .object = root else {
            throw TokenizerError.invalidField(component: "tokenizer", field: "(root)", expected: "an object")
        }
        let config: TokenizerConfig?
        do {
            config = try configData.map { try TokenizerConfig(json: JSON.parse($0)) }
        } catch let error as JSONSyntaxError {
            // Say which of the two files is broken.
            throw TokenizerError.invalidJSON("tokenizer_config.json: \(error.description)")
        }

        guard let modelJSON = root["model"] else {
            throw TokenizerError.invalidField(component: "tokenizer", field: "model", expected: "an object")
        }
        let normalizer = try NormalizerFactory.make(root["normalizer"] ?? .null)
        let preTokenizer = try PreTokenizerFactory.make(root["pre_tokenizer"] ?? .null)
        let model = try ModelFactory.make(modelJSON)
        var postProcessor = try PostProcessorFactory.make(root["post_processor"] ?? .null)
        let decoder = try DecoderFactory.make(root["decoder"] ?? .null)
        let added = try AddedVocabulary(json: root["added_tokens"], normalizer: normalizer)

        var tokensByID = model.idToToken
        tokensByID.merge(added.decodeStringByID) { _, added in added }

        func lookup(_ token: String) -> Int? {
            added.idsByContent[Array(token.utf8)] ?? model.tokenID(forUTF8: Array(token.utf8))
        }
        func specialID(_ configured: String?, fallback: String, role: String) throws -> Int? {
            if let configured {
                guard let id = lookup(configured) else { throw TokenizerError.unknownToken(component: "tokenizer_config \(role)", token: configured) }
                return id
            }
            return added.specialContents.contains(Array(fallback.utf8)) ? lookup(fallback) : nil
        }
        let bos = try specialID(config?.bosToken, fallback: "<s>", role: "bos_token")
        let eos = try specialID(config?.eosToken, fallback: "</s>", role: "eos_token")

        if root["post_processor"]?.isNull ?? true, let config, config.addBOS != nil || config.addEOS != nil {
            var single: [TemplateProcessing.Piece] = []
            if config.addBOS == true, let bos { single.append(.special([bos])) }
            single.append(.sequence)
            if config.addEOS == true, let eos { single.append(.special([eos])) }
            postProcessor = TemplateProcessing(single: single)
        }

        self.vocabularySize = (tokensByID.keys.max() ?? -1) + 1
        self.bosTokenID = bos
        self.eosTokenID = eos
        self.addedVocabulary = added
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.model = model
        self.postProcessor = postProcessor
        self.decoder = decoder
        self.tokensByID = tokensByID
    }

    private static func read(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
    }

    // MARK: - Encoding

    /// Token ids for `text`. With `addSpecialTokens` the post-processor template applies
    /// (LLaMA: `<s>` first); added tokens written in the text (`<image>`) are always recognised.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 2)
        let raw = addedVocabulary.split(Scalars(text), isAtStart: true, using: addedVocabulary.rawMatcher)
        for segment in raw {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let piece):
                let normalized = normalizer?.normalize(piece.scalars) ?? piece.scalars
                let inner = addedVocabulary.split(normalized, isAtStart: piece.isAtStart, using: addedVocabulary.normalizedMatcher)
                for part in inner {
                    switch part {
                    case .token(let id):
                        ids.append(id)
                    case .text(let piece):
                        let words = preTokenizer?.preTokenize([piece]) ?? [piece]
                        for word in words { model.tokenize(word.scalars, into: &ids) }
                    }
                }
            }
        }
        return postProcessor?.process(ids, addSpecialTokens: addSpecialTokens) ?? ids
    }

    // MARK: - Decoding

    /// Text for `ids`. Unknown ids are ignored (as in HF); with `skipSpecialTokens`, special
    /// added tokens (`<s>`, `<image>`, …) are left out before the decoder runs.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let token = tokensByID[id] else { continue }
            if skipSpecialTokens, addedVocabulary.specialContents.contains(Array(token.utf8)) { continue }
            tokens.append(token)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens).joined()
    }

    // MARK: - Vocabulary

    /// Exact id of a token string (added tokens first, then the model vocabulary).
    /// Matching is byte-exact, not by canonical equivalence.
    public func tokenID(for token: String) -> Int? {
        let bytes = Array(token.utf8)
        return addedVocabulary.idsByContent[bytes] ?? model.tokenID(forUTF8: bytes)
    }

    /// The token string of `id`, or nil if no token has that id.
    public func token(for id: Int) -> String? {
        tokensByID[id]
    }

    /// Whether `id` is a special added token (skipped by `decode(skipSpecialTokens: true)`).
    public func isSpecialToken(_ id: Int) -> Bool {
        guard let token = tokensByID[id] else { return false }
        return addedVocabulary.specialContents.contains(Array(token.utf8))
    }
}

/// The parts of tokenizer_config.json the engine uses.
struct TokenizerConfig: Sendable {
    var bosToken: String?
    var eosToken: String?
    var addBOS: Bool?
    var addEOS: Bool?

    init(json: JSON) throws {
        let config = try ComponentConfig(component: "tokenizer_config", json: json)
        bosToken = try Self.tokenContent(config, "bos_token")
        eosToken = try Self.tokenContent(config, "eos_token")
        addBOS = try config.optionalBool("add_bos_token")
        addEOS = try config.optionalBool("add_eos_token")
    }

    /// Special tokens appear either as a plain string or as a serialised `AddedToken` object.
    private static func tokenContent(_ config: ComponentConfig, _ key: String) throws -> String? {
        guard let value = config.json[key], !value.isNull else { return nil }
        if let s = value.stringValue { return s }
        if let s = value["content"]?.stringValue { return s }
        throw config.invalid(key, "a string or {\"content\": …}")
    }
}
