import Foundation

/// `value` as the commands print JSON: keys sorted, and with `pretty` indented one member a line.
func jsonData<T: Encodable>(_ value: T, pretty: Bool, snakeCase: Bool = false) throws -> Data {
    let encoder = JSONEncoder()
    if snakeCase { encoder.keyEncodingStrategy = .convertToSnakeCase }
    encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : .sortedKeys
    return try encoder.encode(value)
}

/// `value` as one line of JSON (JSON-lines output).
func jsonLine<T: Encodable>(_ value: T) throws -> String {
    String(decoding: try jsonData(value, pretty: false), as: UTF8.self)
}
