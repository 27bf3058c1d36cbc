import HTTPTypes
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOHTTPTypes

/// Answers `POST /introspect` (RFC 7662, JSON) on the event loop when everything it needs is in memory — the
/// caller's client record, the token's record, its client and user — without the router, the async request
/// task or a thread hop. Anything else (a miss, an error, `Accept: application/token-introspection+jwt`, another
/// endpoint) goes on to the Hummingbird router exactly as it arrived, so both paths give the same answers.
///
/// Sits after Hummingbird's HTTP/1 codec (it sees swift-http-types parts). Requests are answered in order: while a
/// request handed to the router is unanswered, later ones are handed on too.
final class IntrospectionFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Bodies larger than this go to the router (which applies its own limit).
    static let maxBody = 16 * 1024

    private enum State {
        case idle
        /// Passing a request's parts on to the router.
        case forwarding
        /// Reading an introspection request's body.
        case collecting(HTTPRequest, ByteBuffer)
    }

    private let tokens: TokenService
    private let logger: Logger
    private var state = State.idle
    /// Requests handed to the router whose response has not ended yet.
    private var routed = 0
    private var date = HTTPDate()
    private var readPending = false
    private var heldQuiesce = false

    init(tokens: TokenService, logger: Logger) {
        self.tokens = tokens
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.idle, .head(let head)):
            if routed == 0, head.method == .post, head.path == "/introspect" {
                state = .collecting(head, context.channel.allocator.buffer(capacity: 0))
            } else {
                forward(context, part)
            }
        case (.collecting(let head, var body), .body(let chunk)):
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
            state = .collecting(head, body)
        case (.collecting(let head, let body), .end(let trailers)):
            state = .idle
            if !answer(context, head, body) {
                forward(context, .head(head))
                if body.readableBytes > 0 { forward(context, .body(body)) }
                forward(context, .end(trailers))
            }
            releaseQuiesce(context)
        default:
            forward(context, part)
        }
    }

    private func forward(_ context: ChannelHandlerContext, _ part: HTTPRequestPart) {
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
    private func answer(_ context: ChannelHandlerContext, _ head: HTTPRequest, _ body: ByteBuffer) -> Bool {
        guard let contentType = head.headerFields[.contentType], contentType.lowercased().hasPrefix("application/x-www-form-urlencoded"),
            !(head.headerFields[.accept]?.lowercased().contains("application/token-introspection+jwt") ?? false),
            let form = try? FormParameters.parse(String(buffer: body)),
            let claims = tokens.introspectFromMemory(form: form, authorization: head.headerFields[.authorization])
        else { return false }
        let requestID = head.headerFields[.requestID].flatMap { RequestIDMiddleware.isAcceptable($0) ? $0 : nil } ?? RequestIDMiddleware.generate()
        let json = claims.jsonBytes
        var fields: HTTPFields = [
            .contentType: "application/json; charset=utf-8", .cacheControl: "no-store", .init("Pragma")!: "no-cache", .requestID: requestID,
            .contentLength: String(json.count),
        ]
        fields[.date] = date.now()
        fields[.server] = "gatehouse"
        let close = head.headerFields[.connection]?.lowercased() == "close"
        if close { fields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .ok, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(bytes: json))), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
        if logger.logLevel <= .info {
            logger.info("request", metadata: ["method": "POST", "path": "/introspect", "status": "200", "request_id": "\(requestID)", "path_taken": "memory"])
        }
        return true
    }
}

@available(*, unavailable)
extension IntrospectionFastPath: Sendable {}

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
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = seconds - days * 86400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let weekday = ((days % 7) + 11) % 7  // 1970-01-01 was a Thursday
        let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(names[weekday]), \(two(day)) \(months[month - 1]) \(year) \(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) GMT"
    }
}
