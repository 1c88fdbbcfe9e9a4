import FlamingoCore
/// Adds special tokens around an encoded sequence (tokenizer.json `post_processor`).
/// Only single sequences are supported; the engine never encodes sentence pairs.
protocol PostProcessor: Sendable {
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int]
}

/// The `type` values accepted for `post_processor` sections.
enum PostProcessorType: String {
    case templateProcessing = "TemplateProcessing"
    case sequence = "Sequence"
    case byteLevel = "ByteLevel"
}

enum PostProcessorFactory {
    /// Builds the post-processor for a tokenizer.json `post_processor` value; `null` means none.
    static func make(_ json: JSON) throws -> (any PostProcessor)? {
        if json.isNull { return nil }
        let config = try ComponentConfig(component: "post-processor", json: json)
        let typeName = try config.type()
        guard let type = PostProcessorType(rawValue: typeName) else {
            throw TokenizerError.unsupportedComponent(component: "post-processor", type: typeName)
        }
        switch type {
        case .templateProcessing:
            return try TemplateProcessing(config: config)
        case .sequence:
            return SequencePostProcessor(processors: try config.array("processors").compactMap { try make($0) })
        case .byteLevel:
            // Only adjusts offsets (trim_offsets); ids are untouched.
            return nil
        }
    }
}

struct SequencePostProcessor: PostProcessor {
    let processors: [any PostProcessor]

    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        processors.reduce(ids) { $1.process($0, addSpecialTokens: addSpecialTokens) }
    }
}

/// `TemplateProcessing` for the `single` template, e.g. LLaMA's `<s> $A` (bos prepended).
/// With `addSpecialTokens == false` the sequence passes through unchanged, as in HF.
struct TemplateProcessing: PostProcessor {
    enum Piece: Sendable, Equatable {
        case sequence
        case special([Int])
    }

    let single: [Piece]

    init(single: [Piece]) {
        self.single = single
    }

    init(config: ComponentConfig) throws {
        // special_tokens: { name: { "id": name, "ids": [..], "tokens": [..] } }
        var specials: [String: [Int]] = [:]
        if let members = config.json["special_tokens"]?.objectMembers {
            for member in members {
                guard let ids = member.value["ids"]?.arrayValue else {
                    throw config.invalid("special_tokens[\"\(member.key)\"].ids", "an array of ids")
                }
                let parsed = ids.compactMap(\.intValue)
                guard parsed.count == ids.count else {
                    throw config.invalid("special_tokens[\"\(member.key)\"].ids", "an array of ids")
                }
                specials[member.key] = parsed
            }
        }
        var single: [Piece] = []
        for item in try config.array("single") {
            if let seq = item["Sequence"] {
                // "A" is the only sequence a single-sequence template can refer to.
                guard seq["id"]?.stringValue == "A" else { throw config.invalid("single.Sequence.id", "\"A\"") }
                single.append(.sequence)
            } else if let special = item["SpecialToken"] {
                guard let name = special["id"]?.stringValue else { throw config.invalid("single.SpecialToken.id", "a string") }
                guard let ids = specials[name] else {
                    throw TokenizerError.unknownToken(component: "post-processor template", token: name)
                }
                single.append(.special(ids))
            } else {
                throw config.invalid("single[]", "{\"Sequence\": …} or {\"SpecialToken\": …}")
            }
        }
        self.single = single
    }

    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        guard addSpecialTokens else { return ids }
        var out: [Int] = []
        out.reserveCapacity(ids.count + 2)
        for piece in single {
            switch piece {
            case .sequence: out.append(contentsOf: ids)
            case .special(let specialIDs): out.append(contentsOf: specialIDs)
            }
        }
        return out
    }
}
