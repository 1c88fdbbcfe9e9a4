import Foundation
import Synchronization

/// The architectures this build runs, keyed by config.json `model_type`. Adding one is a folder
/// under Architectures/ and a line in `builtIn`; tests may register their own.
public enum ModelRegistry {
    /// An architecture: its `model_type` and how its configuration is read from config.json.
    public struct Architecture: Sendable {
        public let modelType: String
        public let decode: @Sendable (Data) throws -> any ModelConfiguration

        public init<C: ModelConfiguration & Decodable>(_ type: C.Type, modelType: String) {
            self.modelType = modelType
            decode = { try JSONDecoder().decode(C.self, from: $0) }
        }
    }

    static let builtIn: [Architecture] = [
        Architecture(IdeficsConfig.self, modelType: IdeficsConfig.modelType),
    ]

    private static let table = Mutex<[String: Architecture]>(
        Dictionary(uniqueKeysWithValues: builtIn.map { ($0.modelType, $0) }))

    /// Adds (or replaces) an architecture.
    public static func register(_ architecture: Architecture) {
        table.withLock { $0[architecture.modelType] = architecture }
    }

    public static var modelTypes: [String] { table.withLock { $0.keys.sorted() } }

    /// Reads a config.json: its `model_type` picks the architecture that decodes the rest.
    public static func configuration(from data: Data, path: String) throws -> any ModelConfiguration {
        struct ModelType: Decodable {
            var modelType: String?
            enum CodingKeys: String, CodingKey { case modelType = "model_type" }
        }
        let type: String
        do {
            type = try JSONDecoder().decode(ModelType.self, from: data).modelType ?? ""
        } catch DecodingError.typeMismatch {
            throw ConfigError.invalid(key: "model_type", reason: "must be a string")
        } catch {
            throw ConfigError.unreadable(path: path, reason: "not a JSON object (\(error.localizedDescription))")
        }
        guard let architecture = table.withLock({ $0[type] }) else {
            throw ConfigError.unknownModelType(type, supported: modelTypes)
        }
        do {
            return try architecture.decode(data)
        } catch let error as ConfigError {
            throw error
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context),
                let DecodingError.keyNotFound(_, context), let DecodingError.dataCorrupted(context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ConfigError.invalid(key: key.isEmpty ? "(root)" : key, reason: context.debugDescription)
        } catch {
            throw ConfigError.unreadable(path: path, reason: "\(error)")
        }
    }

    /// Reads `config.json` at `url`.
    public static func configuration(contentsOf url: URL) throws -> any ModelConfiguration {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ConfigError.unreadable(path: url.path, reason: "no such file or not readable")
        }
        return try configuration(from: data, path: url.path)
    }
}
