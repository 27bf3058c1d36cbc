import Hummingbird
import NIOCore

/// Per-request context: the peer's address (for throttling) and the request id (for error bodies and logs).
public struct AuthRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's IP address as the socket saw it.
    public let remoteAddress: String
    /// Set by `RequestIDMiddleware`.
    public var requestID: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Token and form bodies are small; anything larger is refused with 413.
    public var maxUploadSize: Int { 64 * 1024 }
}
