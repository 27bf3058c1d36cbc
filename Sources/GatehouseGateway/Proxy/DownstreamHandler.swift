import GatehouseObservability
import NIOCore
import NIOHTTP1

/// The server side of the proxy: one per downstream HTTP/1.1 connection (and one per HTTP/2 stream), on the
/// connection's event loop.
///
/// Parses nothing itself (NIO's llhttp decoder before it refuses malformed framing). For each request it runs
/// admission (`RequestAdmission`: limits, framing, target, route), then the route's policies (`RoutePolicy`:
/// proceed, reject or suspend), then forwards on an upstream connection leased on the same loop, streaming parts
/// both ways; reads on each side follow the other side's writability. Every request — forwarded, refused,
/// rejected, timed out, abandoned, tunnelled — ends in `end(_:)`, which tells the observers.
///
/// The concerns live in their own files: admission and policies (`+Admission`), the upstream leg (`+Upstream`),
/// responses and replies (`+Responses`), the protocol-upgrade tunnel (`+Tunnel`). The connection's lifecycle is
/// `ConnectionStateMachine` (`lifecycle`), each exchange's request/response sub-states its `ExchangeStateMachine`
/// (`phase`): the handler feeds them events and carries out the actions they return.
final class DownstreamHandler: ChannelDuplexHandler, UpstreamDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// One request/response exchange: its context (what policies and observers see) and the upstream leg's state.
    final class Exchange {
        var context: RequestContext
        /// Built by `forward` once the policies have proceeded (nil before: a placeholder head would cost an
        /// allocation per request, `HTTPRequestHead` keeping its fields in a class).
        var upstreamHead: HTTPRequestHead?
        /// Chosen by `dispatch` (after the policies, so an unauthenticated client learns nothing of the upstreams).
        var target = TargetKey.unassigned
        let maxBodyBytes: Int
        var retryable: Bool
        /// How the upstream request's body is delimited (see `UpstreamFraming`); `.undecided` holds the head back.
        var framing: UpstreamFraming
        /// Whether the head went to the current upstream connection (each try writes it again).
        var headWritten = false
        /// The response is delimited by closing the connection (an HTTP/1.0 client, a body without a length).
        var closeAfterResponse = false
        /// Whether the upstream request is chunked (else its end writes nothing).
        var upstreamChunked: Bool
        /// The request's and the response's sub-states and the per-try and total deadlines (events in, actions out).
        var phase: ExchangeStateMachine
        var requestEnded: Bool { phase.requestEnded }
        var responseHeadSent: Bool { phase.responseHeadSent }
        var switchingProtocols: Bool { phase.response == .switchingProtocols }
        /// The policy that suspended the exchange (the token check waiting for the authorization server, a rate limit
        /// delaying it, the admission queue); nil while it runs.
        var suspendedBy: PolicyKind? { phase.suspendedBy }
        var suspended: Bool { phase.suspendedBy != nil }
        /// When the current try started (slow calls, the breaker's and metrics' durations).
        var attemptStartedAt: NIODeadline?
        /// Waiting in the pool's queue for a connection (cancelled if the exchange ends first).
        var acquiring = false
        var attempts = 0
        var bodyBytes = 0
        var responseStatus = 0
        var upstreamHeadAt: NIODeadline?
        /// What the metrics and the access log measure of the upstream leg (`DownstreamHandler+Measurements`).
        var measurements = ExchangeMeasurements()
        /// Parts received before the upstream connection is ready.
        var buffered: [HTTPClientRequestPart] = []
        var connection: UpstreamConnection?

        init(context: consuming RequestContext) {
            let admitted = context.admitted
            self.route = admitted.route
            self.requestID = context.requestID
            self.requestHead = context.head
            self.maxBodyBytes = admitted.route.maxBodyBytes
            self.retryable = admitted.idempotent && !admitted.hasBody && !admitted.isUpgrade
            self.framing = admitted.framing
            self.upstreamChunked = admitted.framing == .chunked
            self.phase = ExchangeStateMachine(totalDeadline: (context.receivedAt + admitted.route.totalTimeout).uptimeNanoseconds)
            // An upgrade the route does not allow goes upstream as a plain request; the parser has stopped, so the
            // connection closes after the response.
            self.closeAfterResponse = admitted.requestsUpgrade && !admitted.isUpgrade
            self.keepAlive = context.head.isKeepAlive
            self.isUpgrade = admitted.isUpgrade
            self.context = context
        }

        // Read on every part of the exchange: kept as fields of their own, so that no read copies the context
        // (a copy of `RequestContext` is an outlined value-witness call that retains every string in it).
        let route: CompiledRoute
        let requestID: String
        let requestHead: HTTPRequestHead
        let keepAlive: Bool
        let isUpgrade: Bool
    }

    let runtime: GatewayRuntime
    let loops: LoopStates
    let scheme: String
    var loop: LoopState!
    var context: ChannelHandlerContext!
    var gateway: CompiledGateway
    var clock: GatewayClock
    var peer: HeaderHygiene.Peer = .init(address: "unknown", isTrustedProxy: false, scheme: "http")
    var exchange: Exchange?
    /// A downstream read held back until the upstream can take more.
    var pendingRead = false
    /// The connection's lifecycle — idle, reading a head (its deadline), in an exchange, closing — with the last
    /// activity and whether it drains; the exchange's own sub-states are its `phase`.
    var lifecycle: ConnectionStateMachine
    /// Parts of pipelined requests that arrived while an exchange was in flight, replayed in order when it ends.
    /// (NIO's HTTPServerPipelineHandler does this by pausing reads around every response, which costs two
    /// epoll_ctl calls per request; here reads pause only while something is actually queued.)
    var queued = CircularBuffer<HTTPServerRequestPart>(initialCapacity: 1)
    /// A malformed pipelined request seen while an earlier one was in flight: answered (and the connection closed)
    /// once that earlier response is complete.
    var deferredError: GatewayReply?
    /// Why `HTTP2RequestHeadChecker` refused this stream's request head (answered with 400 when the head arrives).
    var http2HeadRefusal: String?
    /// State the route policies keep per connection (the token memo).
    var policyState = ConnectionPolicyState()
    /// `Forwarded` element for the last Host seen on this connection (the peer never changes; the Host rarely does).
    var forwardedCache: (host: String?, value: String)?
    /// Set by a graceful shutdown: finish the exchange in flight, then close.
    var draining: Bool { lifecycle.draining }
    /// Whether the request a reply is about to answer is a HEAD request (no body in the answer).
    var answeringHEAD = false

    /// How responses leave the handler.
    enum ResponseOutput {
        /// Serialized here (`HTTP1ResponseSerializer`) and written as bytes: the HTTP/1.1 pipeline, which has no
        /// response encoder.
        case http1Bytes
        /// As `HTTPServerResponsePart`s, for an HTTP/2 stream's codec.
        case parts
    }

    let responseOutput: ResponseOutput
    var serializer = HTTP1ResponseSerializer()
    /// Response bytes not yet written (HTTP/1.1): a small response's head, body and end become one write.
    var output: ByteBuffer?
    /// Body parts up to this size are copied into `output`; larger ones are written as they are.
    static let coalescingLimit = 16 * 1024

    init(runtime: GatewayRuntime, loops: LoopStates, scheme: String, responses: ResponseOutput) {
        self.runtime = runtime
        self.loops = loops
        self.scheme = scheme
        self.responseOutput = responses
        self.gateway = runtime.snapshot
        self.clock = loops.clock
        self.lifecycle = ConnectionStateMachine(now: loops.clock.now().uptimeNanoseconds)
    }

    /// Applies a lifecycle event. An illegal one is a bug: asserted in debug builds (every test runs them), and the
    /// state is left as it was.
    @inline(__always)
    func transition(_ event: () throws -> Void) {
        do {
            try event()
        } catch {
            assertionFailure("illegal transition of a downstream connection: \(error)")
        }
    }

    /// A duration for the state machines (nanoseconds, never negative).
    @inline(__always)
    static func nanoseconds(_ amount: TimeAmount) -> UInt64 {
        UInt64(max(0, amount.nanoseconds))
    }

    /// Called by `HTTP2RequestHeadChecker` just before it passes on a header block it refuses.
    func refuseHTTP2Head(_ reason: String) {
        http2HeadRefusal = reason
    }

    // MARK: Connection lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loop = loops.state(for: context.eventLoop)
        loop.register(self)
        // A dual-stack listener's IPv4 peers (`::ffff:a.b.c.d`) are named and matched as the IPv4 address.
        let address = context.channel.remoteAddress
        let text = address.map(PeerAddress.peerAddressText) ?? "unknown"
        peer = .init(address: text, isTrustedProxy: gateway.isTrusted(address.flatMap(PeerAddress.addressBytes)), scheme: scheme)
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
        lifecycle.inactive()
        if let exchange { finish(exchange, cause: .clientGone, upstream: .close) }
        context.fireChannelInactive()
    }

    /// Slow clients: a request head must be complete within the header read timeout of its first byte (and of the
    /// connection's start). Between requests only the idle timeout applies.
    func armHeaderTimeout() {
        lifecycle.activated(now: clock.now().uptimeNanoseconds, headerReadTimeout: Self.nanoseconds(gateway.headerReadTimeout))
    }

    /// Bytes arrived (from `RequestStartDetector`, before the decoder): if no request is in progress, this is the
    /// start of one, and its head must be complete within the header read timeout.
    func bytesArrived() {
        lifecycle.bytesArrived(now: clock.now().uptimeNanoseconds, headerReadTimeout: Self.nanoseconds(gateway.headerReadTimeout))
    }

    /// Called by the loop's ticker: enforces the header read, idle, per-try and total timeouts.
    func tick(now: NIODeadline) {
        guard let context, context.channel.isActive else { return }
        switch lifecycle.tick(now: now.uptimeNanoseconds, idleTimeout: Self.nanoseconds(gateway.idleTimeout)) {
        case .none:
            return
        case .close:
            context.close(promise: nil)
        case .checkExchange:
            guard let exchange else { return }
            switch exchange.phase.tick(now: now.uptimeNanoseconds) {
            case .none:
                return
            case .truncate:
                finish(exchange, cause: .truncated, upstream: .close)
                lifecycle.closeNow()
                context.close(promise: nil)
            case .suspensionTimedOut(let kind):
                // Still waiting on a policy: the upstream was never asked.
                fail(exchange, Self.suspensionTimedOut(kind, exchange))
            case .totalTimeout:
                attemptTimedOut(exchange, now: now)
                fail(exchange, GatewayReply(.gatewayTimeout, "the upstream did not answer within \(exchange.route.totalTimeout.nanoseconds / 1_000_000) ms", closes: !exchange.requestEnded, cause: .upstreamTimeout))
            case .perTryTimeout:
                attemptTimedOut(exchange, now: now)
                fail(exchange, GatewayReply(.gatewayTimeout, "the upstream did not answer within \(exchange.route.perTryTimeout.nanoseconds / 1_000_000) ms", closes: !exchange.requestEnded, cause: .upstreamTimeout))
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is DrainEvent:
            if lifecycle.drain() == .close { context.close(promise: nil) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Inbound from the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Once the gateway decided to close (an error answered while request bytes were unread, a drain), nothing
        // more from this client is acted on: a pipelined request must not run upstream unanswered.
        guard !lifecycle.isClosing, deferredError == nil else { return }
        lifecycle.activity(now: clock.now().uptimeNanoseconds)
        let part = unwrapInboundIn(data)
        if !queued.isEmpty || (exchange != nil && exchange!.requestEnded) {
            queued.append(part)  // a pipelined request: wait for the current response
            return
        }
        handle(part)
    }

    func handle(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            startExchange(head)
        case .body(let buffer):
            guard let exchange, !lifecycle.isClosing else { return }
            exchange.bodyBytes += buffer.readableBytes
            if exchange.bodyBytes > exchange.maxBodyBytes {
                fail(exchange, exchange.route.bodyTooLarge)
                return
            }
            switch exchange.framing {
            case .undecided:
                guard decideFraming(.chunked, exchange) else { return }
            case .none:
                // Nothing was announced upstream, so nothing may follow (HTTP/1's parser delivers no body then;
                // this guards every other path into the encoder).
                fail(exchange, .unannouncedBody)
                return
            case .contentLength(let declared):
                // More than announced would reach the upstream as the start of another request (HTTP/1's parser
                // never delivers it; HTTP/2's codec is checked by NIO; this holds whatever delivers the parts).
                if exchange.bodyBytes > declared {
                    fail(exchange, .bodyLongerThanContentLength)
                    return
                }
            case .chunked:
                break
            }
            send(.body(.byteBuffer(buffer)), exchange)
        case .end(let trailers):
            guard let exchange, !lifecycle.isClosing else { return }
            if exchange.framing == .undecided, !decideFraming(.none, exchange) { return }
            transition { try exchange.phase.requestEnd() }
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

    func read(context: ChannelHandlerContext) {
        if lifecycle.isClosing { return }
        if !queued.isEmpty {
            pendingRead = true
        } else if let exchange, exchange.framing != .undecided, !(exchange.suspended && exchange.requestEnded),
            exchange.connection == nil || exchange.connection?.channel.isWritable == false
        {
            // Wait for the upstream (connecting, or its buffer is full). A suspended request that has been read whole
            // keeps reading: a client that leaves while its request waits (in the admission queue, for its token's
            // check) is noticed at once and its place freed; a pipelined request behind it is queued, which pauses
            // reading again.
            pendingRead = true
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
            let reply = GatewayReply.refused(status, "malformed request: \(parserError)")
            if let exchange, exchange.requestEnded {
                // The error is in a later, pipelined request: the one in flight is complete and may already have run
                // upstream, so it gets its response first; the error answer and the close follow it.
                queued.removeAll()
                deferredError = reply
                return
            }
            if let exchange {
                if exchange.responseHeadSent {
                    finish(exchange, cause: .truncated, upstream: .close)
                    lifecycle.closeNow()
                    context.close(promise: nil)
                } else {
                    fail(exchange, reply)
                }
            } else {
                answeringHEAD = false
                refuse(reply, requestID: loop.requestIDs.next(), method: nil, receivedAt: clock.now())
            }
            return
        }
        if let exchange { finish(exchange, cause: .clientGone, upstream: .close) }
        lifecycle.closeNow()
        context.close(promise: nil)
    }

    /// Processes pipelined parts that waited for the previous exchange, then lets reading continue.
    func replayQueued() {
        while exchange == nil || !(exchange!.requestEnded), !lifecycle.isClosing, let part = queued.popFirst() {
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
