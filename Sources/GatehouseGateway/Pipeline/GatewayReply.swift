import NIOHTTP1

/// Everything the gateway answers itself — refusals before routing, policy rejections, upstream failures —
/// described once and rendered by one function (`DownstreamHandler.send(_:requestID:)`): a small JSON body
/// `{"error":…,"message":…,"request_id":…}`, `Content-Type`, `Content-Length`, `X-Request-Id`, `Cache-Control:
/// no-store`, the reply's extra headers, and `Connection: close` when the connection must close.
struct GatewayReply: Error {
    var status: HTTPResponseStatus
    /// The machine-readable code (`bad_request`, `invalid_token`, `rate_limited`, …).
    var error: String
    /// A fixed, human-readable reason; never echoes a credential.
    var message: String
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, …). Usually none.
    var headers: [(String, String)] = []
    /// Whether the connection closes after the reply (unread request bytes, a parser that stopped, a protocol error).
    var closesConnection: Bool
    /// Why the exchange ended, for the outcome observers.
    var cause: EndCause
    /// A configured answer sent as it is instead of the JSON error body (a circuit breaker's `fallback`).
    var fixed: Fixed?

    /// A reply whose status, media type and body come from configuration, prebuilt at load.
    struct Fixed: Sendable {
        let status: HTTPResponseStatus
        let contentType: String
        let body: String
        let contentLength: String

        init(status: HTTPResponseStatus, contentType: String, body: String) {
            self.status = status
            self.contentType = contentType
            self.body = body
            self.contentLength = String(body.utf8.count)
        }
    }

    init(_ status: HTTPResponseStatus, _ message: String, error: String? = nil, closes: Bool, cause: EndCause, headers: [(String, String)] = []) {
        self.status = status
        self.error = error ?? Self.errorName(status)
        self.message = message
        self.headers = headers
        self.closesConnection = closes
        self.cause = cause
    }

    /// A request refused before it was routed or forwarded (malformed, too large, no route): 4xx, closing.
    static func refused(_ status: HTTPResponseStatus, _ message: String, closes: Bool = true) -> GatewayReply {
        GatewayReply(status, message, closes: closes, cause: .refused(status: Int(status.code)))
    }

    static func errorName(_ status: HTTPResponseStatus) -> String {
        switch status.code {
        case 400: "bad_request"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 413: "payload_too_large"
        case 414: "uri_too_long"
        case 429: "rate_limited"
        case 431: "request_header_fields_too_large"
        case 501: "not_implemented"
        case 502: "bad_gateway"
        case 503: "service_unavailable"
        case 504: "gateway_timeout"
        default: "error"
        }
    }
}
