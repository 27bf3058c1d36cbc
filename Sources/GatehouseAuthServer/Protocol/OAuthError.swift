import HTTPTypes

/// An OAuth 2.0 error response (RFC 6749 §4.1.2.1, §5.2), mapped once to its HTTP status.
public struct OAuthError: Error, Equatable, Sendable {
    /// The registered error codes this server answers with.
    public enum Code: String, Sendable {
        case invalidRequest = "invalid_request"
        case invalidClient = "invalid_client"
        case invalidGrant = "invalid_grant"
        case unauthorizedClient = "unauthorized_client"
        case unsupportedGrantType = "unsupported_grant_type"
        case invalidScope = "invalid_scope"
        case accessDenied = "access_denied"
        case unsupportedResponseType = "unsupported_response_type"
        case serverError = "server_error"
        case temporarilyUnavailable = "temporarily_unavailable"
        /// RFC 8693 §2.2.2.
        case invalidTarget = "invalid_target"
    }

    public let code: Code
    /// Human-readable, for the client developer; never contains a credential.
    public let description: String
    /// Seconds the caller should wait (throttling); sent as `Retry-After`.
    public let retryAfter: Int?
    /// A status other than the code's own, where HTTP has a more precise one (413 for a body over the limit).
    private let statusOverride: HTTPResponse.Status?

    public init(_ code: Code, _ description: String, retryAfter: Int? = nil, status: HTTPResponse.Status? = nil) {
        self.code = code
        self.description = description
        self.retryAfter = retryAfter
        self.statusOverride = status
    }

    /// HTTP status for the token endpoint: 401 for client authentication, 500/503 for server faults, else 400
    /// (unless the error was made with another).
    public var status: HTTPResponse.Status {
        if let statusOverride { return statusOverride }
        return switch code {
        case .invalidClient: .unauthorized
        case .serverError: .internalServerError
        case .temporarilyUnavailable: .serviceUnavailable
        default: .badRequest
        }
    }

    public static func == (lhs: OAuthError, rhs: OAuthError) -> Bool { lhs.code == rhs.code }
}
