import NIOCore
import NIOHTTP1

/// A connection's deadlines on the authorization server, as a pure state machine over times given to it.
///
/// - A request head must be complete within `headerReadTimeout` of its first byte (slowloris: without it, a
///   client that sends a head a byte at a time holds a connection, and a request task, for as long as it likes).
/// - A connection with nothing in progress closes after `idleTimeout` without a byte; so does one whose request
///   body stops arriving.
/// - A request read whole and not yet answered has no deadline here: how long answering takes is the server's.
struct ConnectionDeadlines {
    let headerReadTimeout: TimeAmount
    let idleTimeout: TimeAmount
    /// Request heads read whose response has not ended.
    private(set) var open = 0
    /// Whether the body of the last head read is still arriving.
    private(set) var readingBody = false
    /// When the first byte of a head not yet complete arrived.
    private(set) var headStarted: NIODeadline?
    /// When the last byte arrived or the last response ended.
    private(set) var lastActivity: NIODeadline

    init(headerReadTimeout: TimeAmount, idleTimeout: TimeAmount, now: NIODeadline) {
        self.headerReadTimeout = headerReadTimeout
        self.idleTimeout = idleTimeout
        self.lastActivity = now
    }

    /// Bytes arrived (seen before the HTTP decoder). Outside a body they start a head.
    mutating func bytesArrived(now: NIODeadline) {
        lastActivity = now
        if headStarted == nil && !readingBody { headStarted = now }
    }

    mutating func headRead() {
        open += 1
        readingBody = true
        headStarted = nil
    }

    mutating func endRead() {
        readingBody = false
    }

    mutating func responseEnded(now: NIODeadline) {
        open = max(0, open - 1)
        if open == 0 { lastActivity = now }
    }

    /// When the connection must be closed, or nil while a request read whole is being answered.
    var deadline: NIODeadline? {
        if let headStarted { return min(headStarted + headerReadTimeout, lastActivity + idleTimeout) }
        if readingBody || open == 0 { return lastActivity + idleTimeout }
        return nil
    }

    /// How often the handler looks at the deadline at most. No deadline that can arise is nearer than this from
    /// the time of a look, so the handler never has to move its timer earlier when the state changes: one
    /// timer per connection, rescheduled only when it fires, and nothing scheduled per request.
    var checkInterval: TimeAmount { min(headerReadTimeout, idleTimeout) }
}

/// Enforces `ConnectionDeadlines`: sits right after NIO's HTTP/1 decoder (before the token fast path, so it sees
/// the requests the fast path answers as well as the router's), and is told of raw bytes by
/// `ConnectionBytesObserver` at the front of the pipeline. Closes the connection when a deadline passes.
final class ConnectionTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var state: ConnectionDeadlines
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(headerReadTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.state = ConnectionDeadlines(headerReadTimeout: headerReadTimeout, idleTimeout: idleTimeout, now: .now())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    /// From `ConnectionBytesObserver`, on the same event loop.
    func bytesArrived() {
        state.bytesArrived(now: .now())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: state.headRead()
        case .end: state.endRead()
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { state.responseEnded(now: .now()) }
        context.write(data, promise: promise)
    }

    private func start(_ context: ChannelHandlerContext) {
        guard timer == nil else { return }
        schedule(context, at: .now() + state.checkInterval)
    }

    private func schedule(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            check()
        }
    }

    private func check() {
        timer = nil
        guard let context, context.channel.isActive else { return }
        let now = NIODeadline.now()
        let deadline = state.deadline
        if let deadline, now >= deadline {
            context.close(promise: nil)
            return
        }
        schedule(context, at: min(deadline ?? .distantFuture, now + state.checkInterval))
    }
}

/// Tells `ConnectionTimeoutHandler` that bytes arrived, before the HTTP decoder holds back a partial head.
final class ConnectionBytesObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeouts: ConnectionTimeoutHandler

    init(timeouts: ConnectionTimeoutHandler) {
        self.timeouts = timeouts
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timeouts.bytesArrived()
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension ConnectionTimeoutHandler: Sendable {}

@available(*, unavailable)
extension ConnectionBytesObserver: Sendable {}
