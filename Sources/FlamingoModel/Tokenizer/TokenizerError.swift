import Foundation

/// Everything that can go wrong while loading a tokenizer. Encoding and decoding never fail:
/// all validation happens at load time so a loaded `Tokenizer` is always usable.
public enum TokenizerError: Error, Equatable, Sendable, LocalizedError {
    /// The file could not be read.
    case unreadableFile(path: String, reason: String)
    /// The bytes are not valid JSON.
    case invalidJSON(String)
    /// A required field is missing or has the wrong JSON kind.
    case invalidField(component: String, field: String, expected: String)
    /// A pipeline component's `type` is not one this implementation knows.
    case unsupportedComponent(component: String, type: String)
    /// A known component uses an option this implementation does not implement.
    case unsupportedOption(component: String, option: String, value: String)
    /// A merge rule refers to a token missing from the vocabulary, or is malformed.
    case invalidMerge(index: Int, merge: String, reason: String)
    /// A token named by the configuration (unk, template special token, …) has no id.
    case unknownToken(component: String, token: String)

    public var errorDescription: String? {
        switch self {
        case .unreadableFile(let path, let reason):
            "Cannot read tokenizer file \(path): \(reason)"
        case .invalidJSON(let detail):
            "Tokenizer file is not valid JSON: \(detail)"
        case .invalidField(let component, let field, let expected):
            "Tokenizer \(component): field '\(field)' is missing or is not \(expected)"
        case .unsupportedComponent(let component, let type):
            "Tokenizer \(component) of type '\(type)' is not supported"
        case .unsupportedOption(let component, let option, let value):
            "Tokenizer \(component): option \(option) = \(value) is not supported"
        case .invalidMerge(let index, let merge, let reason):
            "Tokenizer BPE merge #\(index) '\(merge)' is invalid: \(reason)"
        case .unknownToken(let component, let token):
            "Tokenizer \(component) refers to token '\(token)', which is not in the vocabulary"
        }
    }
}
