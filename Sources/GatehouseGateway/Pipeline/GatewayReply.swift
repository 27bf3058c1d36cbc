import GatehouseObservability
import NIOHTTP1

/// Everything the gateway answers itself — refusals before routing, policy rejections, upstream failures —
/// described once and rendered by one function (`DownstreamHandler.render(_:requestID:additions:)`): a small JSON
/// body `{"error":…,"message":…,"request_id":…}`, `Content-Type`, `Content-Length`, `X-Request-Id`, `Cache-Control:
/// no-store`, the reply's extra headers, and `Connection: close` when the connection must close.
///
/// The body is built with the reply up to the request id (`bodyPrefix`), so the replies whose every other byte is
/// known before a request arrives are built once and copied per refusal (a copy retains its strings; nothing is
/// formatted or allocated): the refusals of admission (`GatewayReply.noRoute`, …), the per-route 413
/// (`CompiledRoute.bodyTooLarge`) and bearer 401/403 (`RouteAuthorization`), the gateway's 431s
/// (`CompiledGateway`).
struct GatewayReply: Error, Sendable {
    var status: HTTPResponseStatus
    /// The machine-readable code (`bad_request`, `invalid_token`, `rate_limited`, …).
    let error: String
    /// A fixed, human-readable reason; never echoes a credential.
    let message: String
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, …). Usually none.
    var headers: [(String, String)] = []
    /// Whether the connection closes after the reply (unread request bytes, a parser that stopped, a protocol error).
    var closesConnection: Bool
    /// Why the exchange ended, for the outcome observers.
    var cause: EndCause
    /// A configured answer sent as it is instead of the JSON error body (a circuit breaker's `fallback`).
    var fixed: Fixed?
    /// The JSON body up to the request id: `{"error":"…","message":"…","request_id":"` (then the id and
    /// `bodySuffix`).
    let bodyPrefix: String

    /// What follows the request id in the JSON body.
    static let bodySuffix: StaticString = "\"}"

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
        let error = error ?? Self.errorName(status)
        self.error = error
        self.message = message
        self.headers = headers
        self.closesConnection = closes
        self.cause = cause
        self.bodyPrefix = Self.jsonPrefix(error: error, message: message)
    }

    /// `{"error":"<error>","message":<message, quoted>,"request_id":"`, in one string of the exact size.
    static func jsonPrefix(error: String, message: String) -> String {
        let plain = !message.utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
        let quoted = plain ? nil : JSONEscaping.quoted(message)
        var prefix = ""
        prefix.reserveCapacity(40 + error.utf8.count + (quoted?.utf8.count ?? message.utf8.count + 2))
        prefix.append("{\"error\":\"")
        prefix.append(error)
        prefix.append("\",\"message\":")
        if let quoted {
            prefix.append(quoted)
        } else {
            prefix.append("\"")
            prefix.append(message)
            prefix.append("\"")
        }
        prefix.append(",\"request_id\":\"")
        return prefix
    }

    /// A request refused before it was routed or forwarded (malformed, too large, no route): 4xx, closing.
    static func refused(_ status: HTTPResponseStatus, _ message: String, closes: Bool = true) -> GatewayReply {
        GatewayReply(status, message, closes: closes, cause: .refused(status: Int(status.code)))
    }

    /// The same reply, closing the connection or not.
    func closing(_ closes: Bool) -> GatewayReply {
        var reply = self
        reply.closesConnection = closes
        return reply
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

/// The refusals whose bytes (but the request id) are the same for every request, built once at first use.
/// Those that depend on the configuration are built with it: `CompiledRoute.bodyTooLarge`,
/// `CompiledGateway.tooManyHeaderFields` / `headerBlockTooLarge`, `RouteAuthorization.missingTokenReply`.
extension GatewayReply {
    static let targetTooLong = refused(.uriTooLong, "the request-target is longer than \(PathNormalizer.maximumLength) bytes")
    static let hostRequired = refused(.badRequest, "exactly one Host header is required")
    static let badContentLength = refused(.badRequest, "Content-Length must be one decimal number")
    static let connectNotSupported = refused(.methodNotAllowed, "CONNECT is not supported")
    static let noUpgradeOverHTTP2 = refused(.notImplemented, "protocol upgrades are not available over HTTP/2")
    /// Closing; `closing(false)` for a keep-alive request that asked no upgrade.
    static let noRoute = refused(.notFound, "no route for this request")
    static let traceWithBody = refused(.badRequest, "TRACE requests cannot carry a body")
    static let unannouncedBody = refused(.badRequest, "the request carries a body its framing does not announce")
    static let bodyLongerThanContentLength = refused(.badRequest, "the request body is longer than its Content-Length")
    static let upstreamRefused = GatewayReply(.badGateway, "the upstream refused the connection", closes: true, cause: .connectFailed)
    static let upstreamReset = GatewayReply(.badGateway, "the upstream closed or reset the connection", closes: true, cause: .upstreamReset)
}
