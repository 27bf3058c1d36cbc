import Hummingbird
import NIOCore

/// Per-request context: the peer's address (for throttling) and the request id (for error bodies and logs).
public struct AuthRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's IP address: the socket's peer, or the address a trusted proxy forwarded
    /// (`ClientAddressMiddleware`, `trusted_proxies`).
    public var remoteAddress: String
    /// The socket's peer address.
    public let peerAddress: String
    /// Set by `RequestIDMiddleware`.
    public var requestID: String = ""

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        let peer = source.channel.remoteAddress?.ipAddress ?? "unknown"
        self.peerAddress = peer
        self.remoteAddress = peer
    }

    /// Token and form bodies are small; anything larger is refused with 413 (JSON on the OAuth endpoints, an HTML
    /// page on the sign-in pages).
    public var maxUploadSize: Int { 64 * 1024 }
}
