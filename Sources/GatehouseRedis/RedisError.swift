/// A Redis command that did not get a usable reply: a code to branch on and a message for logs.
///
/// Messages name the command, never its arguments (keys may identify users, `AUTH` carries a password).
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: Sendable, Equatable {
        /// No reply within the configured `timeout`; the connection it was sent on was closed.
        case timeout
        /// The connection closed before the reply arrived.
        case connectionClosed
        /// The server answered with an error reply (`-ERR ...`, `-NOSCRIPT ...`, `-WRONGPASS ...`).
        case server(String)
        /// The server sent bytes that are not RESP, or a reply of an unexpected shape.
        case `protocol`
        /// No connection is available: the server is unreachable and the pool is waiting to reconnect.
        case unavailable
    }

    public let code: Code
    /// Why, for logs.
    public let message: String

    /// The command was not sent because this event loop's connections are waiting out their reconnect backoff
    /// (`unavailable` at once, without trying): news about this loop's connections, not about the server now.
    public let isWaitingToReconnect: Bool

    public init(code: Code, message: String, isWaitingToReconnect: Bool = false) {
        self.code = code
        self.message = message
        self.isWaitingToReconnect = isWaitingToReconnect
    }

    public static func == (lhs: RedisError, rhs: RedisError) -> Bool { lhs.code == rhs.code }

    public var description: String { "RedisError(\(code)): \(message)" }

    static func protocolViolation(_ message: String) -> RedisError { RedisError(code: .protocol, message: message) }

    /// The error code word of a server error (`NOSCRIPT`, `WRONGPASS`, `ERR`).
    public var serverErrorCode: Substring? {
        guard case .server(let text) = code else { return nil }
        return text.split(separator: " ", maxSplits: 1).first
    }
}
