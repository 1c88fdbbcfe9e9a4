import FlamingoCore
import FlamingoCluster
import FlamingoModel
import Foundation
import Hummingbird

/// An error as the client sees it: an HTTP status and OpenAI's error object
/// `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, LocalizedError, Equatable, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    /// OpenAI's `type`: "invalid_request_error", "authentication_error", "rate_limit_error", "server_error".
    public var type: String
    /// The request field at fault, as a path ("messages[0].content[1].image_url.url"), or nil.
    public var param: String?
    /// A machine-readable code ("invalid_api_key", "model_not_found", ...), or nil.
    public var code: String?

    public init(status: HTTPResponse.Status, message: String, type: String = "invalid_request_error",
                param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var errorDescription: String? { message }

    /// `{"error": {...}}`
    public var json: JSON {
        .object([("error", .object([
            ("message", .string(message)), ("type", .string(type)), ("param", JSON(param)), ("code", JSON(code)),
        ]))])
    }
}

// MARK: - The errors the server reports

extension APIError {
    static func invalidJSON(_ reason: String) -> APIError {
        APIError(status: .badRequest, message: "We could not parse the JSON body of your request: \(reason)",
                 code: "invalid_json")
    }

    static func missing(_ param: String) -> APIError {
        APIError(status: .badRequest, message: "Missing required parameter: '\(param)'.", param: param,
                 code: "missing_required_parameter")
    }

    static func invalidType(_ param: String, expected: String, got value: JSON) -> APIError {
        APIError(status: .badRequest,
                 message: "Invalid type for '\(param)': expected \(expected), but got \(value.typeName) instead.",
                 param: param, code: "invalid_type")
    }

    static func invalidValue(_ param: String, _ message: String) -> APIError {
        APIError(status: .badRequest, message: "Invalid value for '\(param)': \(message)", param: param,
                 code: "invalid_value")
    }

    static func unsupported(_ param: String, _ message: String) -> APIError {
        APIError(status: .badRequest, message: message, param: param, code: "unsupported_parameter")
    }

    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(status: .contentTooLarge,
                 message: "The request body is larger than this server accepts (\(limit) bytes).",
                 code: "request_too_large")
    }

    static let missingAPIKey = APIError(
        status: .unauthorized,
        message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        type: "invalid_request_error", code: "missing_api_key")

    static let wrongAPIKey = APIError(
        status: .unauthorized, message: "Incorrect API key provided.", type: "invalid_request_error",
        code: "invalid_api_key")

    static func unknownModel(_ name: String, served: String) -> APIError {
        APIError(status: .notFound,
                 message: "The model '\(name)' does not exist. This server serves '\(served)'.",
                 param: "model", code: "model_not_found")
    }

    static func notFound(_ path: String) -> APIError {
        APIError(status: .notFound, message: "Unknown path: \(path)", code: "not_found")
    }

    static func methodNotAllowed(_ method: String, _ path: String) -> APIError {
        APIError(status: .methodNotAllowed, message: "\(method) is not allowed on \(path)", code: "method_not_allowed")
    }

    static func timeout(_ limit: Duration) -> APIError {
        APIError(status: .gatewayTimeout,
                 message: "The request took longer than this server allows (\(limit.seconds) s) and was cancelled.",
                 type: "server_error", code: "timeout")
    }

    static let shuttingDown = APIError(status: .serviceUnavailable, message: "The server is shutting down.",
                                       type: "server_error", code: "shutting_down")

    /// The error a failure anywhere in handling a request turns into.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as EngineError:
            switch error {
            case .queueFull:
                return APIError(status: .tooManyRequests, message: error.localizedDescription,
                                type: "rate_limit_error", code: "queue_full")
            case .unavailable:
                return APIError(status: .serviceUnavailable, message: error.localizedDescription,
                                type: "server_error", code: "model_unavailable")
            case .failed:
                return APIError(status: .internalServerError, message: error.localizedDescription,
                                type: "server_error", code: "generation_failed")
            }
        case let error as RequestError:
            switch error {
            case .promptTooLong:
                return APIError(status: .badRequest, message: error.localizedDescription, param: "messages",
                                code: "context_length_exceeded")
            case .badSampling:
                return APIError(status: .badRequest, message: error.localizedDescription, code: "invalid_value")
            default:
                return APIError(status: .badRequest, message: error.localizedDescription, param: "messages",
                                code: "invalid_request")
            }
        default:
            return APIError(status: .internalServerError,
                            message: "Internal error: \((error as? LocalizedError)?.errorDescription ?? "\(error)")",
                            type: "server_error", code: "internal_error")
        }
    }
}

extension Duration {
    /// Whole and fractional seconds, for messages and metrics.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
