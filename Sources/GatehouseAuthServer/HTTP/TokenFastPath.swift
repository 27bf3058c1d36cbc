#if canImport(Glibc)
import Glibc
#endif
import GatehouseObservability
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import Tracing

/// Answers the two calls a gateway makes for every new token on the event loop when everything they need is in
/// memory — the caller's client record, the token's record, its client and user: `POST /introspect` (RFC 7662,
/// JSON) and the token exchange at `POST /token` (RFC 8693; the JWT is reused or signed right here). No router, no
/// async request task, no thread hop. Anything else (a miss, an error, `Accept: application/token-introspection+jwt`,
/// another grant or endpoint) goes on to the Hummingbird router exactly as it arrived, so both paths give the same
/// answers.
///
/// Sits between NIO's HTTP/1 decoder and Hummingbird's codec (`AuthPipelineInstaller` puts it there), so a request
/// it answers is never converted to swift-http-types and its answer goes straight to NIO's encoder.
/// Requests are answered in order: while a request handed to the router is unanswered, later ones are handed on too.
final class TokenFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Bodies larger than this go to the router (which applies its own limit).
    static let maxBody = 16 * 1024

    private enum Endpoint {
        case introspection, token
    }

    private enum State {
        case idle
        /// Passing a request's parts on to the router.
        case forwarding
        /// Reading the body of a request this handler may answer.
        case collecting(Endpoint, HTTPRequestHead, ByteBuffer)
    }

    private let tokens: TokenService
    private let logger: Logger
    private let metrics: AuthMetrics
    private let accessLog: AccessLogWriter?
    /// When the request being collected started (its duration for the metrics).
    private var startedAt = ContinuousClock.now
    private var state = State.idle
    /// Requests handed to the router whose response has not ended yet.
    private var routed = 0
    private var date = HTTPDate()
    private var readPending = false
    private var heldQuiesce = false
    /// The last caller authenticated on this connection (a gateway sends the same credentials every time).
    private var callerMemo: ClientAuthenticator.Memo?
    /// The peer's address as text (the client-authentication throttle's key), formatted once per connection.
    private var remoteAddress: String?

    private func peerAddress(_ context: ChannelHandlerContext) -> String {
        if let remoteAddress { return remoteAddress }
        let text = context.channel.remoteAddress?.ipAddress ?? "unknown"
        remoteAddress = text
        return text
    }

    /// Server spans of the requests answered here (the router's middleware sees only those handed on).
    private let tracer: GatehouseTracer?

    init(tokens: TokenService, logger: Logger, metrics: AuthMetrics, accessLog: AccessLogWriter?, tracer: GatehouseTracer? = nil) {
        self.tokens = tokens
        self.logger = logger
        self.metrics = metrics
        self.accessLog = accessLog
        self.tracer = tracer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.idle, .head(let head)):
            // (A client waiting for `100 Continue` sends no body until the router answers it: handed on.)
            if routed == 0, head.method == .POST, let endpoint = Self.endpoint(head.uri), !head.headers.contains(name: "expect") {
                state = .collecting(endpoint, head, context.channel.allocator.buffer(capacity: 0))
                startedAt = ContinuousClock.now
            } else {
                forward(context, part)
            }
        case (.collecting(let endpoint, let head, var body), .body(let chunk)):
            guard body.readableBytes + chunk.readableBytes <= Self.maxBody else {
                state = .idle
                forward(context, .head(head))
                forward(context, .body(body))
                forward(context, part)
                releaseQuiesce(context)
                return
            }
            state = .idle  // drop the buffer's second reference before writing to it
            body.writeImmutableBuffer(chunk)
            state = .collecting(endpoint, head, body)
        case (.collecting(let endpoint, let head, let body), .end(let trailers)):
            state = .idle
            if !answer(context, endpoint, head, body) {
                forward(context, .head(head))
                if body.readableBytes > 0 { forward(context, .body(body)) }
                forward(context, .end(trailers))
            }
            releaseQuiesce(context)
        default:
            forward(context, part)
        }
    }

    private static func endpoint(_ uri: String) -> Endpoint? {
        switch uri {
        case "/introspect": .introspection
        case "/token": .token
        default: nil
        }
    }

    private func forward(_ context: ChannelHandlerContext, _ part: HTTPServerRequestPart) {
        switch part {
        case .head:
            routed += 1
            state = .forwarding
        case .end:
            state = .idle
        case .body:
            break
        }
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// Answers written here are not seen by the router's backpressure: reading waits while they cannot be sent.
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && readPending {
            readPending = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    /// A graceful shutdown while a request is being read here: the router does not know of it, so the event
    /// waits until the request is answered or handed on.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, case .collecting = state {
            heldQuiesce = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func releaseQuiesce(_ context: ChannelHandlerContext) {
        guard heldQuiesce else { return }
        heldQuiesce = false
        context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { routed = max(0, routed - 1) }
        context.write(data, promise: promise)
    }

    /// Writes the response when it can be made from memory.
    private func answer(_ context: ChannelHandlerContext, _ endpoint: Endpoint, _ head: HTTPRequestHead, _ body: ByteBuffer) -> Bool {
        guard let contentType = head.headers.first(name: "content-type"), contentType.lowercased().hasPrefix("application/x-www-form-urlencoded"),
            head.headers[canonicalForm: "authorization"].count <= 1,
            let form = try? FormParameters.parse(String(buffer: body))
        else { return false }
        let authorization = head.headers.first(name: "authorization")
        let remoteAddress = peerAddress(context)
        let started = DefaultTracerClock.now
        let json: [UInt8]
        let path: String
        switch endpoint {
        case .introspection:
            guard !head.headers[canonicalForm: "accept"].contains(where: { $0.lowercased().contains("application/token-introspection+jwt") }),
                let claims = tokens.introspectFromMemory(form: form, authorization: authorization, remoteAddress: remoteAddress, callerMemo: &callerMemo)
            else { return false }
            json = claims.jsonBytes
            path = "/introspect"
        case .token:
            guard let issued = tokens.exchangeFromMemory(form: form, authorization: authorization, remoteAddress: remoteAddress, callerMemo: &callerMemo) else { return false }
            json = Array(issued.json.utf8)
            path = "/token"
        }
        let requestID = RequestIDMiddleware.resolve(head.headers.first(name: "x-request-id"))
        let close = !head.isKeepAlive
        var headers = HTTPHeaders([
            ("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "no-store"), ("Pragma", "no-cache"),
            ("X-Request-Id", requestID), ("Content-Length", String(json.count)), ("Date", date.now()), ("Server", "gatehouse"),
        ])
        if close { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: json)))), promise: nil)
        if close {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        let metricsEndpoint: AuthMetrics.Endpoint = endpoint == .token ? .token : .introspect
        let nanoseconds = (ContinuousClock.now - startedAt).nanoseconds
        metrics.request(metricsEndpoint, status: 200, nanoseconds: nanoseconds)
        if endpoint == .token { metrics.tokenIssued(grantType: form["grant_type"]) }
        // The span is open while the access-log line is written (its ids go in the line), and ends after it.
        let span = tracer.flatMap { serverSpan($0, head: head, path: path, grantType: form["grant_type"], requestID: requestID, started: started) }
        if let accessLog {
            let headers = head.headers
            AuthAccessLog.write(
                to: accessLog, requestID: requestID, trace: AuthAccessLog.traceIdentifiers(span: span) { headers.first(name: $0) }, endpoint: metricsEndpoint,
                method: "POST", path: path, status: 200, bytesIn: body.readableBytes, bytesOut: json.count, nanoseconds: nanoseconds
            )
        }
        if logger.logLevel <= .info {
            logger.info("request", metadata: ["method": "POST", "path": "\(path)", "status": "200", "request_id": "\(requestID)", "path_taken": "memory"])
        }
        span?.end()
        return true
    }

    /// The server span of a request answered from memory (nil for an unsampled caller: no span): it continues the
    /// caller's context like the router's middleware does (the gateway's exchange call is the parent).
    private func serverSpan(
        _ tracer: GatehouseTracer, head: HTTPRequestHead, path: String, grantType: String?, requestID: String, started: DefaultTracerClock.Instant
    ) -> GatehouseSpan? {
        let headers = head.headers
        var parent = ServiceContext.topLevel
        tracer.extract({ name in headers.first(name: name) }, into: &parent, using: HeaderLookupExtractor())
        // An unsampled caller's request costs no span here (the fast path is the exchange's hot path).
        if let caller = parent.spanContext, !caller.sampled { return nil }
        let span = tracer.startSpan("POST \(path)", context: parent, ofKind: .server, at: started)
        span.attributes["http.request.method"] = "POST"
        span.attributes["url.path"] = path
        span.attributes["http.route"] = path
        span.attributes["http.response.status_code"] = 200
        span.attributes["gatehouse.request_id"] = requestID
        span.attributes["gatehouse.path_taken"] = "memory"
        if path == "/token" {
            span.attributes["oauth.grant_type"] = grantType == "urn:ietf:params:oauth:grant-type:token-exchange" ? grantType : "other"
            span.attributes["gatehouse.outcome"] = "issued"
        }
        return span
    }
}

@available(*, unavailable)
extension TokenFastPath: Sendable {}

/// The `Date` header value (RFC 9110 §5.6.7 IMF-fixdate), formatted once per second.
struct HTTPDate {
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        let seconds = spec.tv_sec
        if seconds != second {
            second = seconds
            text = Self.format(seconds)
        }
        return text
    }

    static func format(_ seconds: Int) -> String {
        let date = CivilDate(unixSeconds: seconds)
        let (day, month, year, weekday, secondOfDay) = (date.day, date.month, date.year, date.weekday, date.secondOfDay)
        let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(names[weekday]), \(two(day)) \(months[month - 1]) \(year) \(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) GMT"
    }
}
