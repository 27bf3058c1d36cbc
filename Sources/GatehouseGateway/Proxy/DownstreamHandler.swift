import GatehouseObservability
import GatehousePolicies
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The server side of the proxy: one per downstream HTTP/1.1 connection, on the connection's event loop.
///
/// Parses nothing itself (NIO's llhttp decoder before it refuses malformed framing); it checks limits, normalizes
/// and routes the request, leases an upstream connection on the same loop, and streams parts both ways. Reads on
/// each side follow the other side's writability, so a slow peer slows the other instead of filling memory.
final class DownstreamHandler: ChannelDuplexHandler, UpstreamDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// One request/response exchange.
    final class Exchange {
        let requestID: String
        let requestHead: HTTPRequestHead
        var upstreamHead: HTTPRequestHead
        let route: CompiledRoute
        /// Chosen by `dispatch` (after the token check, so an unauthenticated client learns nothing of the upstreams).
        var target = TargetKey.unassigned
        let keepAlive: Bool
        let maxBodyBytes: Int
        /// GET, HEAD, OPTIONS, PUT, DELETE, TRACE.
        let idempotent: Bool
        var retryable: Bool
        /// How the upstream request's body is delimited (see `UpstreamFraming`); `.undecided` holds the head back.
        var framing: UpstreamFraming = .none
        /// Whether the head went to the current upstream connection (each try writes it again).
        var headWritten = false
        /// The response is delimited by closing the connection (an HTTP/1.0 client, a body without a length).
        var closeAfterResponse = false
        /// Whether the upstream request is chunked (else its end writes nothing).
        var upstreamChunked = false
        /// A `Connection: Upgrade` request (WebSocket): on 101 both sides become a byte tunnel.
        var isUpgrade = false
        var switchingProtocols = false
        var attempts = 0
        var bodyBytes = 0
        var requestEnded = false
        var responseHeadSent = false
        /// Parts received before the upstream connection is ready.
        var buffered: [HTTPClientRequestPart] = []
        var connection: UpstreamConnection?
        /// The response head must arrive by then (per try).
        var perTryDeadline: NIODeadline = .distantFuture
        /// The whole exchange must be over by then.
        var totalDeadline: NIODeadline = .distantFuture

        init(requestID: String, requestHead: HTTPRequestHead, upstreamHead: HTTPRequestHead, route: CompiledRoute, keepAlive: Bool, idempotent: Bool, retryable: Bool) {
            self.requestID = requestID
            self.requestHead = requestHead
            self.upstreamHead = upstreamHead
            self.route = route
            self.keepAlive = keepAlive
            self.maxBodyBytes = route.maxBodyBytes
            self.idempotent = idempotent
            self.retryable = retryable
        }
    }

    private let runtime: GatewayRuntime
    private let loops: LoopStates
    private let scheme: String
    private var loop: LoopState!
    private var context: ChannelHandlerContext!
    private var gateway: CompiledGateway
    private var peer: HeaderHygiene.Peer = .init(address: "unknown", isTrustedProxy: false, scheme: "http")
    private var exchange: Exchange?
    /// A downstream read held back until the upstream can take more.
    private var pendingRead = false
    /// The next request head must arrive by then (slowloris); distantFuture while an exchange runs.
    private var headerDeadline: NIODeadline = .distantFuture
    /// Last time anything arrived from the client (idle timeout).
    private var lastActivity: NIODeadline = .now()
    /// After an error response that leaves unread request bytes, the connection closes once it is written.
    private var closing = false
    /// Parts of pipelined requests that arrived while an exchange was in flight, replayed in order when it ends.
    /// (NIO's HTTPServerPipelineHandler does this by pausing reads around every response, which costs two
    /// epoll_ctl calls per request; here reads pause only while something is actually queued.)
    private var queued = CircularBuffer<HTTPServerRequestPart>(initialCapacity: 1)
    /// A malformed pipelined request seen while an earlier one was in flight: answered (and the connection closed)
    /// once that earlier response is complete.
    private var deferredError: (status: HTTPResponseStatus, message: String)?
    /// Why `HTTP2RequestHeadChecker` refused this stream's request head (answered with 400 when the head arrives).
    private var http2HeadRefusal: String?

    /// Called by `HTTP2RequestHeadChecker` just before it passes on a header block it refuses.
    func refuseHTTP2Head(_ reason: String) {
        http2HeadRefusal = reason
    }

    /// How responses leave the handler.
    enum ResponseOutput {
        /// Serialized here (`HTTP1ResponseSerializer`) and written as bytes: the HTTP/1.1 pipeline, which has no
        /// response encoder.
        case http1Bytes
        /// As `HTTPServerResponsePart`s, for an HTTP/2 stream's codec.
        case parts
    }

    private let responseOutput: ResponseOutput
    private var serializer = HTTP1ResponseSerializer()
    /// Response bytes not yet written (HTTP/1.1): a small response's head, body and end become one write.
    private var output: ByteBuffer?
    /// Body parts up to this size are copied into `output`; larger ones are written as they are.
    private static let coalescingLimit = 16 * 1024

    init(runtime: GatewayRuntime, loops: LoopStates, scheme: String, responses: ResponseOutput) {
        self.runtime = runtime
        self.loops = loops
        self.scheme = scheme
        self.responseOutput = responses
        self.gateway = runtime.snapshot
    }

    /// The last token this connection presented on a token-checked route and the route's verdict, for as long as the
    /// shared cache vouches for the token: a keep-alive client sending the same token again skips the hash, the
    /// cache's lock and the route's checks. It holds the client's own `Authorization` value while the connection
    /// lives (the shared cache holds no token, only SHA-256 digests).
    private struct TokenMemo {
        let authorization: String
        let route: RouteAuthorization
        let token: ValidatedToken
        let until: Double
    }

    private var tokenMemo: TokenMemo?

    /// `Forwarded` element for the last Host seen on this connection (the peer never changes; the Host rarely does).
    private var forwardedCache: (host: String?, value: String)?

    // MARK: Connection lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loop = loops.state(for: context.eventLoop)
        loop.register(self)
        let address = context.channel.remoteAddress
        let text = address?.ipAddress ?? "unknown"
        peer = .init(address: text, isTrustedProxy: gateway.isTrusted(address.flatMap(Self.addressBytes)), scheme: scheme)
        if context.channel.isActive { armHeaderTimeout() }
    }

    func channelActive(context: ChannelHandlerContext) {
        armHeaderTimeout()
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        loop.unregister(self)
    }

    func channelInactive(context: ChannelHandlerContext) {
        headerDeadline = .distantFuture
        if let exchange { abandon(exchange) }
        exchange = nil
        context.fireChannelInactive()
    }

    static func addressBytes(_ address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4):
            let value = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            return [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
        case .v6(let v6):
            return withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default:
            return nil
        }
    }

    /// Slow clients: a request head must be complete within the header read timeout of its first byte (and of the
    /// connection's start). Between requests only the idle timeout applies.
    private func armHeaderTimeout() {
        headerDeadline = .now() + gateway.headerReadTimeout
    }

    /// Bytes arrived (from `RequestStartDetector`, before the decoder): if no request is in progress, this is the
    /// start of one, and its head must be complete within the header read timeout.
    func bytesArrived() {
        if exchange == nil && headerDeadline == .distantFuture { armHeaderTimeout() }
    }

    /// Called by the loop's ticker: enforces the header read, idle, per-try and total timeouts.
    func tick(now: NIODeadline) {
        guard let context, context.channel.isActive else { return }
        if let exchange {
            if now >= exchange.totalDeadline {
                if exchange.responseHeadSent {
                    abandon(exchange)
                    self.exchange = nil
                    context.close(promise: nil)
                } else {
                    fail(exchange, status: .gatewayTimeout, message: "the upstream did not answer within \(exchange.route.totalTimeout.nanoseconds / 1_000_000) ms", close: !exchange.requestEnded)
                }
            } else if !exchange.responseHeadSent && now >= exchange.perTryDeadline {
                fail(exchange, status: .gatewayTimeout, message: "the upstream did not answer within \(exchange.route.perTryTimeout.nanoseconds / 1_000_000) ms", close: !exchange.requestEnded)
            }
            return
        }
        if now >= headerDeadline || now - lastActivity >= gateway.idleTimeout {
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is DrainEvent:
            draining = true
            if exchange == nil { context.close(promise: nil) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Set by a graceful shutdown: finish the exchange in flight, then close.
    private var draining = false
    /// Whether the request an error response is about to answer is a HEAD request (no body in the answer).
    private var answeringHEAD = false

    // MARK: Inbound from the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Once the gateway decided to close (an error answered while request bytes were unread, a drain), nothing
        // more from this client is acted on: a pipelined request must not run upstream unanswered.
        guard !closing, deferredError == nil else { return }
        lastActivity = .now()
        let part = unwrapInboundIn(data)
        if !queued.isEmpty || (exchange != nil && exchange!.requestEnded) {
            queued.append(part)  // a pipelined request: wait for the current response
            return
        }
        handle(part)
    }

    private func handle(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            startExchange(head)
        case .body(let buffer):
            guard let exchange, !closing else { return }
            exchange.bodyBytes += buffer.readableBytes
            if exchange.bodyBytes > exchange.maxBodyBytes {
                fail(exchange, status: .payloadTooLarge, message: "the request body exceeds \(exchange.maxBodyBytes) bytes", close: true)
                return
            }
            switch exchange.framing {
            case .undecided:
                guard decideFraming(.chunked, exchange) else { return }
            case .none:
                // Nothing was announced upstream, so nothing may follow (HTTP/1's parser delivers no body then;
                // this guards every other path into the encoder).
                fail(exchange, status: .badRequest, message: "the request carries a body its framing does not announce", close: true)
                return
            case .contentLength(let declared):
                // More than announced would reach the upstream as the start of another request (HTTP/1's parser
                // never delivers it; HTTP/2's codec is checked by NIO; this holds whatever delivers the parts).
                if exchange.bodyBytes > declared {
                    fail(exchange, status: .badRequest, message: "the request body is longer than its Content-Length", close: true)
                    return
                }
            case .chunked:
                break
            }
            send(.body(.byteBuffer(buffer)), exchange)
        case .end(let trailers):
            guard let exchange, !closing else { return }
            if exchange.framing == .undecided, !decideFraming(.none, exchange) { return }
            exchange.requestEnded = true
            // A request without chunked framing ends with nothing on the wire (and cannot carry trailers).
            guard exchange.upstreamChunked else { return }
            let forwarded = trailers.flatMap {
                HeaderHygiene.requestTrailers($0, peer: peer, removing: exchange.route.strippedRequestHeaders, filter: gateway.headerFilter)
            }
            send(.end(forwarded), exchange)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.connection?.channel.flush()
        flushResponse()
    }

    // MARK: Writing responses

    private func writeResponseHead(_ head: HTTPResponseHead, answeringHEAD: Bool) {
        guard responseOutput == .http1Bytes else {
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            return
        }
        var buffer = output ?? context.channel.allocator.buffer(capacity: 512)
        serializer.writeHead(head, answeringHEAD: answeringHEAD, into: &buffer)
        output = buffer
    }

    private func writeResponseBody(_ body: ByteBuffer) {
        guard responseOutput == .http1Bytes else {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            return
        }
        guard !serializer.suppressesBody else { return }
        let length = body.readableBytes
        if length <= Self.coalescingLimit {
            var buffer = output ?? context.channel.allocator.buffer(capacity: length + 16)
            serializer.writeBody(body, into: &buffer)
            output = buffer
            return
        }
        // A large part goes as it is (no copy), framed by what is around it.
        var buffer = output ?? context.channel.allocator.buffer(capacity: 16)
        serializer.writeBodyPrefix(length: length, into: &buffer)
        if buffer.readableBytes > 0 { context.write(NIOAny(buffer), promise: nil) }
        context.write(NIOAny(body), promise: nil)
        var suffix = context.channel.allocator.buffer(capacity: 2)
        serializer.writeBodySuffix(length: length, into: &suffix)
        output = suffix.readableBytes > 0 ? suffix : nil
    }

    private func writeResponseEnd(_ trailers: HTTPHeaders?, promise: EventLoopPromise<Void>?) {
        guard responseOutput == .http1Bytes else {
            context.write(wrapOutboundOut(.end(trailers)), promise: promise)
            return
        }
        var buffer = output ?? context.channel.allocator.buffer(capacity: 8)
        serializer.writeEnd(trailers, into: &buffer)
        output = nil
        if buffer.readableBytes > 0 || promise != nil { context.write(NIOAny(buffer), promise: promise) }
    }

    /// Ends the response and flushes; with `close`, the connection closes once the end is written.
    private func endResponse(_ trailers: HTTPHeaders?, close: Bool) {
        if close {
            let channel = context.channel
            let written = context.eventLoop.makePromise(of: Void.self)
            writeResponseEnd(trailers, promise: written)
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        } else {
            writeResponseEnd(trailers, promise: nil)
        }
        flushResponse()
    }

    /// Writes what is pending and flushes.
    private func flushResponse() {
        if let buffer = output {
            output = nil
            context.write(NIOAny(buffer), promise: nil)
        }
        context.flush()
    }

    func read(context: ChannelHandlerContext) {
        if closing { return }
        if !queued.isEmpty {
            pendingRead = true
        } else if let exchange, exchange.connection == nil || exchange.connection?.channel.isWritable == false {
            pendingRead = true  // wait for the upstream (connecting, or its buffer is full)
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { exchange?.connection?.handler.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Malformed HTTP from the client: answer once, never forward, and close.
        if let parserError = error as? HTTPParserError {
            let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            if let exchange, exchange.requestEnded {
                // The error is in a later, pipelined request: the one in flight is complete and may already have run
                // upstream, so it gets its response first; the error answer and the close follow it.
                queued.removeAll()
                deferredError = (status, "malformed request: \(parserError)")
                return
            }
            if let exchange {
                if exchange.responseHeadSent {
                    abandon(exchange)
                    self.exchange = nil
                    context.close(promise: nil)
                } else {
                    fail(exchange, status: status, message: "malformed request: \(parserError)", close: true)
                }
            } else {
                answeringHEAD = false
                writeError(status: status, message: "malformed request: \(parserError)", requestID: Self.newRequestID(), close: true)
            }
            return
        }
        if let exchange { abandon(exchange) }
        exchange = nil
        context.close(promise: nil)
    }

    // MARK: Starting an exchange

    private func startExchange(_ head: HTTPRequestHead) {
        headerDeadline = .distantFuture
        answeringHEAD = head.method == .HEAD
        gateway = loop.currentGateway(runtime)
        // One pass over the head for everything the checks below need.
        var headerBytes = min(head.uri.utf8.count, PathNormalizer.maximumLength) + 16
        var host: String?
        var hostCount = 0
        var clientRequestID: String?
        var contentLengthValue: String?
        var contentLengthConflict = false
        var chunked = false
        var upgradeValue: String?
        var connectionNominates: String?
        var connectionUpgrade = false
        var authorization: String?
        var authorizationCount = 0
        for (name, value) in head.headers {
            headerBytes &+= name.utf8.count &+ value.utf8.count &+ 4
            switch name.utf8.count {
            case 4 where HeaderHygiene.equalsIgnoringCase(name, "host"):
                hostCount += 1
                host = value
            case 12 where clientRequestID == nil && HeaderHygiene.equalsIgnoringCase(name, "x-request-id"):
                clientRequestID = value
            case 14 where HeaderHygiene.equalsIgnoringCase(name, "content-length"):
                if let first = contentLengthValue, first != value { contentLengthConflict = true }
                contentLengthValue = value
            case 17 where HeaderHygiene.equalsIgnoringCase(name, "transfer-encoding"):
                chunked = true
            case 10 where HeaderHygiene.equalsIgnoringCase(name, "connection"):
                if HeaderHygiene.equalsIgnoringCase(value, "keep-alive") || HeaderHygiene.equalsIgnoringCase(value, "close") { break }
                if HeaderHygiene.equalsIgnoringCase(value, "upgrade") {
                    connectionUpgrade = true
                    break
                }
                if connectionNominates == nil { connectionNominates = HeaderHygiene.forbiddenConnectionNomination(value) }
                connectionUpgrade = connectionUpgrade || HeaderHygiene.connectionTokens(value).contains { HeaderHygiene.equalsIgnoringCase($0, "upgrade") }
            case 7 where HeaderHygiene.equalsIgnoringCase(name, "upgrade"):
                upgradeValue = upgradeValue.map { $0 + ", " + value } ?? value
            case 13 where HeaderHygiene.equalsIgnoringCase(name, "authorization"):
                authorizationCount += 1
                if authorization == nil { authorization = value }
            default:
                break
            }
        }
        let requestID = clientRequestID.flatMap { Self.isAcceptableRequestID($0) ? $0 : nil } ?? Self.newRequestID()
        // A target over the limit is 414 (RFC 9112 §3), before it counts against the header block's size.
        if head.uri.utf8.count > PathNormalizer.maximumLength {
            return writeError(status: .uriTooLong, message: "the request-target is longer than \(PathNormalizer.maximumLength) bytes", requestID: requestID, close: true)
        }
        // Limits on the head (the decoder already capped both at its hard limits).
        if head.headers.count > gateway.maxHeaderCount {
            return writeError(status: .requestHeaderFieldsTooLarge, message: "more than \(gateway.maxHeaderCount) header fields", requestID: requestID, close: true)
        }
        if headerBytes > gateway.maxHeaderBytes {
            return writeError(status: .requestHeaderFieldsTooLarge, message: "the header block exceeds \(gateway.maxHeaderBytes) bytes", requestID: requestID, close: true)
        }
        if (head.version.minor >= 1 && hostCount != 1) || hostCount > 1 || host?.utf8.contains(UInt8(ascii: ",")) == true {
            return writeError(status: .badRequest, message: "exactly one Host header is required", requestID: requestID, close: true)
        }
        if let reason = http2HeadRefusal {
            http2HeadRefusal = nil
            return writeError(status: .badRequest, message: "malformed HTTP/2 request: \(reason)", requestID: requestID, close: true)
        }
        if let nominated = connectionNominates {
            return writeError(status: .badRequest, message: "Connection must not name \(nominated)", requestID: requestID, close: true)
        }
        // One length, one decimal number (HTTP/1's parser already refused the rest; HTTP/2 fields are checked here).
        let contentLength = contentLengthValue.flatMap { $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } ? Int($0) : nil }
        if contentLengthConflict || (contentLengthValue != nil && contentLength == nil) {
            return writeError(status: .badRequest, message: "Content-Length must be one decimal number", requestID: requestID, close: true)
        }
        if head.method == .CONNECT {
            return writeError(status: .methodNotAllowed, message: "CONNECT is not supported", requestID: requestID, close: true)
        }
        // The client asked to switch protocols (HTTP/1's parser stops after such a request either way).
        let requestsUpgrade = upgradeValue != nil && connectionUpgrade
        if requestsUpgrade && head.version.major >= 2 {
            return writeError(status: .notImplemented, message: "protocol upgrades are not available over HTTP/2", requestID: requestID, close: true)
        }
        let normalized: NormalizedTarget
        switch PathNormalizer.normalize(head.uri, parameters: gateway.pathParameters) {
        case .success(let value): normalized = value
        case .failure(let error):
            return writeError(status: error.code == .tooLong ? .uriTooLong : .badRequest, message: "bad request target: \(error.message)", requestID: requestID, close: true)
        }
        // An absolute-form target's authority is the request's host (RFC 9112 §3.2.2): routed on, and sent upstream.
        let effectiveHost = normalized.authority ?? host
        guard let (route, prefix) = gateway.routes.match(host: effectiveHost, path: normalized.path, method: head.method.rawValue) else {
            return writeError(status: .notFound, message: "no route for this request", requestID: requestID, close: !head.isKeepAlive || requestsUpgrade)
        }
        // Only the protocols the route allows are switched to; any other `Upgrade` (h2c above all) is not forwarded.
        let isUpgrade = requestsUpgrade && route.allowsUpgrade(upgradeValue!)
        if let length = contentLength, length > route.maxBodyBytes {
            return writeError(status: .payloadTooLarge, message: "the request body exceeds \(route.maxBodyBytes) bytes", requestID: requestID, close: true)
        }
        let hasBody = chunked || (contentLength ?? 0) > 0

        // The route's token policy. A known token is decided here, synchronously; an unknown one is looked up by
        // the validator and the exchange waits for it below (reads paused, so its body stays in the socket).
        var token: ValidatedToken?
        var pendingToken: EventLoopFuture<TokenValidator.Outcome>?
        if let auth = route.auth, let memo = tokenMemo, memo.route === auth, authorizationCount == 1, authorization == memo.authorization,
            auth.validator.now() < memo.until
        {
            token = memo.token  // the same token as this connection's last request on this route, still vouched for
        } else if let auth = route.auth {
            // A refused request whose body was not read cannot leave the connection usable.
            let close = !head.isKeepAlive || requestsUpgrade || hasBody
            let presented: String
            switch BearerToken.extract(first: authorization, count: authorizationCount) {
            case .success(let value):
                presented = value
            case .failure(.missing):
                return writeAuthorizationFailure(.challenge(auth.challenge(nil)), requestID: requestID, close: close)
            case .failure(.malformed(let why)):
                return writeAuthorizationFailure(.challenge(auth.challenge(.invalidRequest, why)), requestID: requestID, close: true)
            }
            let kind: TokenValidator.Kind
            switch auth.kind(of: presented) {
            case .success(let value): kind = value
            case .failure(let challenge): return writeAuthorizationFailure(.challenge(challenge), requestID: requestID, close: close)
            }
            switch auth.validator.validate(presented, kind: kind, on: context.eventLoop) {
            case .cached(let validated, let until):
                switch Self.authorize(.valid(validated), auth) {
                case .success(let validated):
                    token = validated
                    if let authorization { tokenMemo = TokenMemo(authorization: authorization, route: auth, token: validated, until: until) }
                case .failure(let failure):
                    return writeAuthorizationFailure(failure, requestID: requestID, close: close)
                }
            case .now(let outcome):
                switch Self.authorize(outcome, auth) {
                case .success(let validated): token = validated
                case .failure(let failure): return writeAuthorizationFailure(failure, requestID: requestID, close: close)
                }
            case .later(let future):
                pendingToken = future
            }
        }
        let now = NIODeadline.now()

        var upstreamPath = normalized.path
        if let prefix, let replacement = route.prefixReplacement {
            var rest = String(upstreamPath.dropFirst(prefix.count))
            if !rest.isEmpty && !rest.hasPrefix("/") && !replacement.hasSuffix("/") { rest = "/" + rest }
            upstreamPath = replacement + rest
            if upstreamPath.isEmpty { upstreamPath = "/" }
            if !upstreamPath.hasPrefix("/") { upstreamPath = "/" + upstreamPath }
        }
        let forwarded: String
        if let cached = forwardedCache, cached.host == effectiveHost {
            forwarded = cached.value
        } else {
            forwarded = HeaderHygiene.forwardedElement(peer: peer, host: effectiveHost)
            forwardedCache = (effectiveHost, forwarded)
        }
        // The client's credentials stay here; the backend gets the gateway's JWT (and no client-made copy of it).
        var headers = HeaderHygiene.requestHeaders(
            from: head.headers, peer: peer, requestID: requestID, via: gateway.via, isUpgrade: isUpgrade, forwarded: forwarded,
            removing: route.strippedRequestHeaders, adding: token.flatMap { token in route.auth.map { ($0.forwardHeader, $0.forwardValue(token)) } },
            filter: gateway.headerFilter, host: normalized.authority
        )
        if hasBody && head.method == .TRACE {
            return writeError(status: .badRequest, message: "TRACE requests cannot carry a body", requestID: requestID, close: true)
        }
        // The framing header is the gateway's own, from what it forwards: a body is always framed, whatever the
        // client's `Connection` named (a body-carrying GET left unframed would be read upstream as more requests).
        let framing = UpstreamFraming.decide(version: head.version, contentLength: contentLength, chunked: chunked)
        framing.apply(to: &headers, method: head.method)
        let upstreamHead = HTTPRequestHead(
            version: .http1_1, method: head.method,
            uri: normalized.query.map { upstreamPath + "?" + $0 } ?? upstreamPath, headers: headers
        )
        let idempotent: Bool
        switch head.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: idempotent = true
        default: idempotent = false
        }
        let exchange = Exchange(
            requestID: requestID, requestHead: head, upstreamHead: upstreamHead, route: route,
            keepAlive: head.isKeepAlive, idempotent: idempotent, retryable: idempotent && !hasBody && !isUpgrade
        )
        exchange.isUpgrade = isUpgrade
        exchange.framing = framing
        exchange.upstreamChunked = framing == .chunked
        // An upgrade the route does not allow goes upstream as a plain request; the parser has stopped, so the
        // connection closes after the response.
        if requestsUpgrade && !isUpgrade { exchange.closeAfterResponse = true }
        self.exchange = exchange
        exchange.totalDeadline = now + route.totalTimeout
        if let pendingToken, let auth = route.auth {
            pendingToken.whenSuccess { outcome in
                guard self.exchange === exchange else { return }  // the client left, or a timeout answered
                switch Self.authorize(outcome, auth) {
                case .success(let validated):
                    exchange.upstreamHead.headers.add(name: auth.forwardHeader, value: auth.forwardValue(validated))
                    self.dispatch(exchange)
                case .failure(let failure):
                    self.exchange = nil
                    self.writeAuthorizationFailure(failure, requestID: exchange.requestID, close: !exchange.requestEnded || !exchange.keepAlive || exchange.isUpgrade)
                }
            }
            return
        }
        dispatch(exchange)
    }

    /// Picks the upstream target and sends the request to it.
    private func dispatch(_ exchange: Exchange) {
        guard let target = loop.pickTarget(exchange.route.cluster, now: .now()) else {
            return fail(exchange, status: .serviceUnavailable, message: "no healthy upstream in cluster \(exchange.route.cluster.name)", close: false)
        }
        exchange.target = target
        connect(exchange)
    }

    // MARK: Tokens

    enum AuthorizationFailure: Error {
        /// 401, 400 or 403 with `WWW-Authenticate`.
        case challenge(BearerChallenge)
        /// 503 with `Retry-After`: the token could not be checked (fail closed).
        case unavailable
    }

    /// Seconds a client is asked to wait when its token cannot be checked.
    static let retryAfterSeconds = "2"

    static func authorize(_ outcome: TokenValidator.Outcome, _ auth: RouteAuthorization) -> Result<ValidatedToken, AuthorizationFailure> {
        switch outcome {
        case .valid(let token):
            if let challenge = auth.check(token) { return .failure(.challenge(challenge)) }
            return .success(token)
        case .invalid(let why):
            return .failure(.challenge(auth.challenge(.invalidToken, why)))
        case .unavailable:
            return .failure(.unavailable)
        }
    }

    /// RFC 6750 §3: the challenge in `WWW-Authenticate`, the same error in the JSON body with the request id.
    private func writeAuthorizationFailure(_ failure: AuthorizationFailure, requestID: String, close: Bool) {
        switch failure {
        case .challenge(let challenge):
            writeError(
                status: HTTPResponseStatus(statusCode: challenge.status), message: challenge.description ?? "a bearer token is required",
                requestID: requestID, close: close, error: challenge.error?.rawValue ?? "unauthorized", headers: [("WWW-Authenticate", challenge.headerValue)]
            )
        case .unavailable:
            writeError(
                status: .serviceUnavailable, message: "the token cannot be checked now (the authorization server is unreachable); retry later",
                requestID: requestID, close: close, error: "temporarily_unavailable", headers: [("Retry-After", Self.retryAfterSeconds)]
            )
        }
    }

    private func connect(_ exchange: Exchange) {
        exchange.attempts += 1
        loop.started(exchange.target)
        if let connection = loop.pool.acquireIdle(exchange.target) {
            attach(connection, to: exchange)
            return
        }
        let limits = exchange.route.cluster.poolLimits.limits
        // Captures self strongly: a weak capture would give the handler a side table and slow every later
        // retain of it; the future completes within the connect timeout anyway.
        let pool = loop.pool
        loop.pool.acquire(exchange.target, limits: limits).whenComplete { result in
            guard self.exchange === exchange else {
                // The exchange ended while the connection was being acquired: undo its in-flight count too.
                self.loop.finished(exchange.target)
                if case .success(let connection) = result {
                    // Released on the next loop tick, not here: handing it to the next waiter runs that waiter's
                    // callback inside this one, and thousands of abandoned waiters would nest that deep.
                    pool.eventLoop.execute { pool.release(connection, limits: limits) }
                }
                return
            }
            switch result {
            case .success(let connection):
                self.attach(connection, to: exchange)
            case .failure(let error):
                self.loop.finished(exchange.target)
                exchange.route.cluster.health.recordFailure(exchange.target, now: .now())
                if self.retry(exchange) { return }
                let exhausted = (error as? UpstreamError) == .poolExhausted
                self.fail(exchange, status: exhausted ? .serviceUnavailable : .badGateway, message: exhausted ? "too many requests waiting for cluster \(exchange.route.cluster.name)" : "the upstream refused the connection", close: !exchange.requestEnded)
            }
        }
    }

    /// Another try on another target, for idempotent requests without a body, within the route's attempts.
    private func retry(_ exchange: Exchange) -> Bool {
        guard exchange.retryable, !exchange.responseHeadSent, exchange.attempts <= exchange.route.cluster.retryAttempts,
            let next = loop.pickTarget(exchange.route.cluster, excluding: exchange.target, now: .now()) ?? loop.pickTarget(exchange.route.cluster, now: .now())
        else { return false }
        exchange.target = next
        exchange.perTryDeadline = .distantFuture  // set again when the new connection is attached
        exchange.headWritten = false
        exchange.buffered = []  // a retryable request has no body, so its end writes nothing either
        connect(exchange)
        return true
    }

    private func attach(_ connection: UpstreamConnection, to exchange: Exchange) {
        exchange.connection = connection
        connection.handler.delegate = self
        guard exchange.framing != .undecided else {
            // The head waits for the first DATA frame or the end of the stream; keep reading to learn which.
            if pendingRead {
                pendingRead = false
                context.read()
            }
            return
        }
        writeUpstreamHead(exchange, connection)
    }

    /// Settles an HTTP/2 request's framing at its first DATA frame (`.chunked`) or its end (`.none`), and sends the
    /// head if a connection waits for it. False when the request was refused instead.
    private func decideFraming(_ framing: UpstreamFraming, _ exchange: Exchange) -> Bool {
        if framing == .chunked && exchange.requestHead.method == .TRACE {
            fail(exchange, status: .badRequest, message: "TRACE requests cannot carry a body", close: true)
            return false
        }
        exchange.framing = framing
        framing.apply(to: &exchange.upstreamHead.headers, method: exchange.requestHead.method)
        exchange.upstreamChunked = framing == .chunked
        exchange.retryable = exchange.idempotent && framing == .none && !exchange.isUpgrade
        if let connection = exchange.connection, !exchange.headWritten { writeUpstreamHead(exchange, connection) }
        return true
    }

    private func writeUpstreamHead(_ exchange: Exchange, _ connection: UpstreamConnection) {
        exchange.headWritten = true
        // The head first (every try sends it again), then whatever of the body arrived meanwhile.
        connection.channel.write(NIOAny(HTTPClientRequestPart.head(exchange.upstreamHead)), promise: nil)
        if !exchange.buffered.isEmpty {
            for part in exchange.buffered { connection.channel.write(NIOAny(part), promise: nil) }
            exchange.buffered.removeAll()
        }
        connection.channel.flush()
        exchange.perTryDeadline = .now() + exchange.route.perTryTimeout
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    private func send(_ part: HTTPClientRequestPart, _ exchange: Exchange) {
        if let connection = exchange.connection, exchange.headWritten {
            connection.channel.write(NIOAny(part), promise: nil)
        } else {
            exchange.buffered.append(part)
        }
    }

    // MARK: Inbound from the upstream

    var downstreamIsWritable: Bool { context?.channel.isWritable ?? false }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable && pendingRead {
            pendingRead = false
            context.read()
        }
    }

    func upstream(received part: HTTPClientResponsePart) {
        guard let exchange else { return }
        switch part {
        case .head(let head):
            if head.status == .switchingProtocols && exchange.isUpgrade {
                exchange.perTryDeadline = .distantFuture
                exchange.totalDeadline = .distantFuture
                exchange.switchingProtocols = true
                exchange.responseHeadSent = true
                let headers = HeaderHygiene.responseHeaders(from: head.headers, via: gateway.via, requestID: exchange.requestID, isUpgrade: true)
                writeResponseHead(HTTPResponseHead(version: exchange.requestHead.version, status: head.status, headers: headers), answeringHEAD: false)
                return
            }
            if head.status.code < 200 {
                // 100 Continue and other informational responses pass through; 101 only for upgrade requests.
                guard head.status != .switchingProtocols else { return }
                writeResponseHead(HTTPResponseHead(version: exchange.requestHead.version, status: head.status, headers: head.headers), answeringHEAD: false)
                return
            }
            exchange.perTryDeadline = .distantFuture
            if !head.isKeepAlive { exchange.connection?.isReusable = false }
            if head.status.code >= 500 {
                exchange.route.cluster.health.recordFailure(exchange.target, now: .now())
            } else {
                exchange.route.cluster.health.recordSuccess(exchange.target)
            }
            // An HTTP/1.0 client gets a body without a length delimited by the close (the serializer's rule).
            let answeringHEAD = exchange.requestHead.method == .HEAD
            let closeDelimited =
                responseOutput == .http1Bytes
                && HTTP1ResponseSerializer.isCloseDelimited(status: head.status, version: exchange.requestHead.version, headers: head.headers, answeringHEAD: answeringHEAD)
            if closeDelimited { exchange.closeAfterResponse = true }
            let headers = HeaderHygiene.responseHeaders(
                from: head.headers, via: gateway.via, requestID: exchange.requestID, isUpgrade: false,
                close: !exchange.keepAlive || draining || closeDelimited
            )
            exchange.responseHeadSent = true
            writeResponseHead(HTTPResponseHead(version: exchange.requestHead.version, status: head.status, headers: headers), answeringHEAD: answeringHEAD)
        case .body(let buffer):
            guard exchange.responseHeadSent, exchange.requestHead.method != .HEAD else { return }
            writeResponseBody(buffer)
        case .end(let trailers):
            guard exchange.responseHeadSent else { return }
            if exchange.switchingProtocols {
                startTunnel(exchange)
                return
            }
            finish(exchange, trailers: trailers)
        }
    }

    /// After `101 Switching Protocols`: both pipelines drop their HTTP handlers (bytes already read past the HTTP
    /// messages are passed on, not lost) and relay raw bytes to each other.
    private func startTunnel(_ exchange: Exchange) {
        guard let connection = exchange.connection else { return }
        self.exchange = nil
        connection.isReusable = false
        connection.handler.delegate = nil
        // The connection leaves the pool for good: release its slot now (its handler will not see the close).
        connection.handler.onClose?()
        connection.handler.onClose = nil
        loop.finished(exchange.target)
        let (downstreamSide, upstreamSide) = TunnelHandler.pair()
        let downstream = context.channel
        let upstream = connection.channel
        let ended = context.eventLoop.makePromise(of: Void.self)
        writeResponseEnd(nil, promise: ended)
        flushResponse()
        ended.futureResult.whenComplete { _ in
            do {
                // Removals of these handlers complete synchronously, in call order. First both tunnel ends go in and
                // every HTTP encoder and handler comes out of both pipelines; only then the decoders go, handing
                // the bytes they read past the HTTP messages (early frames) to a tunnel that can pass them on.
                let down = downstream.pipeline.syncOperations
                let up = upstream.pipeline.syncOperations
                // A tunnel with no byte either way for the route's `tunnel_idle` closes (both ends: the tunnel
                // handler closes its partner). The idle handler sits in front of the tunnel end, so it sees both the
                // client's bytes and those written to it.
                try down.addHandler(IdleStateHandler(allTimeout: exchange.route.tunnelIdleTimeout))
                try down.addHandler(downstreamSide)
                try up.addHandler(upstreamSide)
                _ = up.removeHandler(connection.handler)
                _ = up.removeHandler(try up.handler(type: HTTPRequestEncoder.self))
                _ = down.removeHandler(try down.handler(type: RequestStartDetector.self))
                _ = down.removeHandler(self)
                // Decoder removal runs a little later (ByteToMessageHandler defers it), and the bytes it hands over
                // come without a read-complete event: flush the other side once each removal is done.
                up.removeHandler(try up.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)).whenComplete { _ in
                    downstream.flush()
                    upstream.read()
                }
                down.removeHandler(try down.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)).whenComplete { _ in
                    upstream.flush()
                    downstream.read()
                }
            } catch {
                downstream.close(promise: nil)
                upstream.close(promise: nil)
            }
        }
    }

    func upstreamReadComplete() {
        if context != nil { flushResponse() }
    }

    func upstream(failed error: any Error) {
        guard let exchange, let connection = exchange.connection else { return }
        connection.isReusable = false
        connection.handler.delegate = nil
        exchange.connection = nil
        loop.finished(exchange.target)
        if exchange.responseHeadSent {
            // Mid-response: the client cannot be told cleanly; end the connection so it sees a truncated message.
            self.exchange = nil
            context.close(promise: nil)
            return
        }
        exchange.route.cluster.health.recordFailure(exchange.target, now: .now())
        if exchange.requestEnded, retry(exchange) { return }
        fail(exchange, status: .badGateway, message: "the upstream closed or reset the connection", close: !exchange.requestEnded)
    }

    // MARK: Ending an exchange

    private func finish(_ exchange: Exchange, trailers: HTTPHeaders?) {
        self.exchange = nil
        answeringHEAD = false
        loop.finished(exchange.target)
        if let connection = exchange.connection {
            // An upstream that answered before the whole request was sent cannot be reused.
            if !exchange.requestEnded { connection.isReusable = false }
            loop.pool.release(connection, limits: exchange.route.cluster.poolLimits.limits)
            exchange.connection = nil
        }
        let close = !exchange.keepAlive || !exchange.requestEnded || draining || exchange.isUpgrade || exchange.closeAfterResponse
        lastActivity = .now()
        // (A response to HEAD ends without a terminating chunk: the serializer knows it answers HEAD.)
        endResponse(trailers, close: close)
        if close {
            closing = true
        } else if let (status, message) = deferredError {
            deferredError = nil
            writeError(status: status, message: message, requestID: Self.newRequestID(), close: true)
        } else {
            headerDeadline = .distantFuture
            replayQueued()
        }
    }

    /// Processes pipelined parts that waited for the previous exchange, then lets reading continue.
    private func replayQueued() {
        while exchange == nil || !(exchange!.requestEnded), !closing, let part = queued.popFirst() {
            handle(part)
            if exchange?.requestEnded == true { break }
        }
        // Replays run outside the downstream's read cycle (often inside the upstream's), so nothing else will
        // flush what they wrote to the upstream.
        exchange?.connection?.channel.flush()
        if queued.isEmpty && pendingRead && exchange?.connection != nil || (queued.isEmpty && pendingRead && exchange == nil) {
            pendingRead = false
            context.read()
        }
    }

    /// Gives up the upstream side of an exchange (the connection cannot be reused).
    private func abandon(_ exchange: Exchange) {
        if let connection = exchange.connection {
            connection.isReusable = false
            connection.handler.delegate = nil
            connection.channel.close(promise: nil)
            exchange.connection = nil
            loop.finished(exchange.target)
        }
    }

    /// Ends an exchange with a gateway-made error response.
    private func fail(_ exchange: Exchange, status: HTTPResponseStatus, message: String, close: Bool) {
        abandon(exchange)
        self.exchange = nil
        // After an upgrade request the decoder stops parsing: the connection cannot carry another request.
        writeError(status: status, message: message, requestID: exchange.requestID, close: close || !exchange.keepAlive || exchange.isUpgrade)
    }

    /// A small JSON error body with the request id. Closing errors stop reading the request.
    private func writeError(status: HTTPResponseStatus, message: String, requestID: String, close closeRequested: Bool, error: String? = nil, headers extra: [(String, String)] = []) {
        // A draining connection takes no further requests.
        let close = closeRequested || draining
        var body = context.channel.allocator.buffer(capacity: 128 + message.utf8.count)
        body.writeString("{\"error\":\"")
        body.writeString(error ?? Self.errorName(status))
        body.writeString("\",\"message\":")
        body.writeString(JSONEscaping.quoted(message))
        body.writeString(",\"request_id\":\"")
        body.writeString(requestID)
        body.writeString("\"}")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "X-Request-Id", value: requestID)
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in extra { headers.add(name: name, value: value) }
        if close { headers.add(name: "Connection", value: "close") }
        lastActivity = .now()
        // A response to HEAD carries the Content-Length of the body it would have had, and no body: a client
        // would read one as the start of the next response.
        writeResponseHead(HTTPResponseHead(version: .http1_1, status: status, headers: headers), answeringHEAD: answeringHEAD)
        if !answeringHEAD { writeResponseBody(body) }
        answeringHEAD = false
        endResponse(nil, close: close)
        if close {
            closing = true
        } else if exchange == nil, let (status, message) = deferredError {
            // A malformed request was pipelined behind the one just answered: its 400 and the close come now.
            deferredError = nil
            writeError(status: status, message: message, requestID: Self.newRequestID(), close: true)
        } else {
            headerDeadline = .distantFuture
            if exchange == nil { replayQueued() }
        }
    }

    static func errorName(_ status: HTTPResponseStatus) -> String {
        switch status.code {
        case 400: "bad_request"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 413: "payload_too_large"
        case 414: "uri_too_long"
        case 431: "request_header_fields_too_large"
        case 501: "not_implemented"
        case 502: "bad_gateway"
        case 503: "service_unavailable"
        case 504: "gateway_timeout"
        default: "error"
        }
    }

    // MARK: Request ids

    static func isAcceptableRequestID(_ id: String) -> Bool {
        (1...128).contains(id.utf8.count)
            && id.utf8.allSatisfy { byte in
                (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == 45 || byte == 46 || byte == 95
            }
    }

    private static let idAlphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
    private static let processPrefix: String = {
        var generator = SystemRandomNumberGenerator()
        return String((0..<8).map { _ in Character(UnicodeScalar(idAlphabet[Int(generator.next() % 36)])) })
    }()
    private static let counter = NIOLockedValueBox<UInt64>(0)

    /// A process-random prefix and a counter (ids only need to be unique, not secret).
    static func newRequestID() -> String {
        let value = counter.withLockedValue { value -> UInt64 in
            value &+= 1
            return value
        }
        return processPrefix + "-" + String(value, radix: 36)
    }
}

@available(*, unavailable)
extension DownstreamHandler: Sendable {}

extension DownstreamHandler: RemovableChannelHandler {}
extension RequestStartDetector: RemovableChannelHandler {}

/// Sits in front of the HTTP decoder and tells the downstream handler when bytes arrive, so the header read timeout
/// can start at a request's first byte rather than at the end of the previous response.
final class RequestStartDetector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    unowned(unsafe) let downstream: DownstreamHandler

    init(downstream: DownstreamHandler) {
        self.downstream = downstream
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        downstream.bytesArrived()
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension RequestStartDetector: Sendable {}
