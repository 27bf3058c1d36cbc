import NIOCore
import NIOHTTP1
import NIOPosix

/// Keep-alive connections to every target, for one event loop. Confined to that loop: no locks on the hot path.
/// Downstream connections on this loop lease upstream connections from it, so both sides of an exchange share
/// the loop and parts pass between them without a thread hop.
final class UpstreamPool {
    /// Pool limits per target.
    struct Limits {
        var maxConnections: Int
        var maxIdle: Int
        var idleTimeout: TimeAmount
        var connectTimeout: TimeAmount
        /// Requests waiting for a connection at most.
        var maxPending: Int = 4096
    }

    let eventLoop: any EventLoop
    private var idle: [TargetKey: [UpstreamConnection]] = [:]
    private var open: [TargetKey: Int] = [:]
    private var waiting: [TargetKey: CircularBuffer<EventLoopPromise<UpstreamConnection>>] = [:]

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// A connection to `target`: an idle one if there is one, a new one if the limit allows, else the next
    /// one released.
    /// An idle connection to `target`, without a future (the common case on a busy gateway).
    func acquireIdle(_ target: TargetKey) -> UpstreamConnection? {
        // Mutate in place through the subscript: copying the array out and back would copy it on every lease.
        while let connection = idle[target]?.popLast() {
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    func acquire(_ target: TargetKey, limits: Limits) -> EventLoopFuture<UpstreamConnection> {
        eventLoop.assertInEventLoop()
        if let connection = acquireIdle(target) { return eventLoop.makeSucceededFuture(connection) }
        if open[target, default: 0] < limits.maxConnections {
            return connect(target, limits: limits)
        }
        guard waiting[target, default: []].count < limits.maxPending else {
            return eventLoop.makeFailedFuture(UpstreamError.poolExhausted)
        }
        let promise = eventLoop.makePromise(of: UpstreamConnection.self)
        waiting[target, default: []].append(promise)
        return promise.futureResult
    }

    /// Returns a connection after an exchange. Reusable ones go to a waiter or back to the idle list.
    func release(_ connection: UpstreamConnection, limits: Limits) {
        eventLoop.assertInEventLoop()
        connection.handler.delegate = nil
        guard connection.isReusable, connection.channel.isActive else {
            connection.isReusable = false
            connection.channel.close(promise: nil)
            return
        }
        if var queue = waiting[connection.target], let next = queue.popFirst() {
            waiting[connection.target] = queue
            next.succeed(connection)
            return
        }
        guard idle[connection.target, default: []].count < limits.maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        connection.idleDeadline = NIODeadline.now() + limits.idleTimeout
        idle[connection.target, default: []].append(connection)
    }

    private func connect(_ target: TargetKey, limits: Limits) -> EventLoopFuture<UpstreamConnection> {
        open[target, default: 0] += 1
        let handler = UpstreamHandler()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(limits.connectTimeout)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 64 * 1024))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try Self.configurePipeline(channel, handler: handler) }
            }
        // The callbacks run on this pool's loop (the connect was started on it), so they may touch the pool.
        return bootstrap.connect(host: target.host, port: target.port).assumeIsolated().flatMapError { error in
            self.open[target, default: 1] -= 1
            self.serveWaiter(target, limits: limits)
            return self.eventLoop.makeFailedFuture(UpstreamError.connectFailed("\(error)"))
        }.map { channel in
            let connection = UpstreamConnection(channel: channel, target: target, handler: handler)
            // No weak references here (they would put the pool and the connection on the slow reference-counting
            // path for every request): the pool lives as long as its loop, and the connection is found by identity.
            let identity = ObjectIdentifier(connection)
            handler.onClose = { [unowned(unsafe) self] in
                self.open[target, default: 1] -= 1
                if let index = self.idle[target]?.firstIndex(where: { ObjectIdentifier($0) == identity }) {
                    self.idle[target]?.remove(at: index)
                }
                self.serveWaiter(target, limits: limits)
            }
            return connection
        }.nonisolated()
    }

    /// An upstream connection's pipeline: request encoder, response decoder, `handler`.
    ///
    /// Outbound header validation is off: request headers were validated by the inbound parser or written by the
    /// gateway itself, and re-checking them cost 6% of the proxy's CPU. Informational responses are forwarded so
    /// that `100 Continue` reaches the client. The encoder adds no framing header of its own: the gateway decides
    /// the upstream request's framing from what it forwards (`UpstreamFraming`), and the encoder chunk-frames
    /// exactly when that head says `Transfer-Encoding: chunked`. (Left to NIO, a POST without a length gained
    /// chunked framing whose end the gateway never wrote, and a GET's body went out unframed.)
    static func configurePipeline(_ channel: any Channel, handler: UpstreamHandler) throws {
        var encoder = HTTPRequestEncoder.Configuration()
        encoder.automaticallySetFramingHeaders = false
        try channel.pipeline.syncOperations.addHandler(HTTPRequestEncoder(configuration: encoder))
        try channel.pipeline.syncOperations.addHandler(
            ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward))
        )
        try channel.pipeline.syncOperations.addHandler(handler)
    }

    /// A slot freed up: connect on behalf of the first waiter.
    private func serveWaiter(_ target: TargetKey, limits: Limits) {
        guard var queue = waiting[target], let next = queue.popFirst() else { return }
        waiting[target] = queue
        acquire(target, limits: limits).cascade(to: next)
    }

    /// Open connections to `target` (idle, leased or connecting).
    func openConnections(_ target: TargetKey) -> Int { open[target, default: 0] }

    /// Idle connections to `target`.
    func idleConnections(_ target: TargetKey) -> Int { idle[target]?.count ?? 0 }

    /// Closes idle connections past their idle deadline (called by the loop's ticker).
    func expireIdle(now: NIODeadline) {
        for (target, connections) in idle {
            guard connections.contains(where: { $0.idleDeadline <= now }) else { continue }
            var kept: [UpstreamConnection] = []
            for connection in connections {
                if connection.idleDeadline <= now { connection.channel.close(promise: nil) } else { kept.append(connection) }
            }
            idle[target] = kept
        }
    }

    /// Takes a connection made elsewhere as an idle one of this pool (tests drive the data path over
    /// `EmbeddedChannel` connections this way).
    func adoptIdle(_ connection: UpstreamConnection) {
        eventLoop.assertInEventLoop()
        open[connection.target, default: 0] += 1
        let target = connection.target
        let identity = ObjectIdentifier(connection)
        connection.handler.onClose = { [unowned(unsafe) self] in
            self.open[target, default: 1] -= 1
            if let index = self.idle[target]?.firstIndex(where: { ObjectIdentifier($0) == identity }) { self.idle[target]?.remove(at: index) }
        }
        idle[target, default: []].append(connection)
    }

    /// Closes every idle connection (shutdown).
    func closeIdle() {
        for (_, connections) in idle { for connection in connections { connection.channel.close(promise: nil) } }
        idle.removeAll()
    }
}
