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
        /// Requests waiting for a connection at most (`pool.max_pending`).
        var maxPending: Int = 4096
    }

    /// A request waiting for a connection, and whose it is (so that it can stop waiting).
    private struct Waiter {
        var promise: EventLoopPromise<UpstreamConnection>
        var owner: ObjectIdentifier?
    }

    let eventLoop: any EventLoop
    private var idle: [TargetKey: [UpstreamConnection]] = [:]
    private var open: [TargetKey: Int] = [:]
    private var waiting: [TargetKey: CircularBuffer<Waiter>] = [:]
    /// Targets whose last connect failed (an entry only while one did: the common case costs one empty lookup).
    private var backoff: [TargetKey: ConnectBackoff] = [:]
    private let now: () -> NIODeadline

    /// - Parameter now: the clock the connect backoff reads (tests inject their own).
    init(eventLoop: any EventLoop, now: @escaping () -> NIODeadline = NIODeadline.now) {
        self.eventLoop = eventLoop
        self.now = now
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

    /// - Parameter owner: who waits, if the request has to wait: `cancelWaiting(owner, target:)` takes it out of
    ///   the queue when it no longer wants the connection.
    func acquire(_ target: TargetKey, limits: Limits, for owner: ObjectIdentifier? = nil) -> EventLoopFuture<UpstreamConnection> {
        eventLoop.assertInEventLoop()
        if let connection = acquireIdle(target) { return eventLoop.makeSucceededFuture(connection) }
        if open[target, default: 0] < limits.maxConnections {
            if let backoff = backoff[target], backoff.retryAt > now() {
                return eventLoop.makeFailedFuture(UpstreamError.connectBackoff)
            }
            return connect(target, limits: limits)
        }
        guard waiting[target, default: []].count < limits.maxPending else {
            return eventLoop.makeFailedFuture(UpstreamError.poolExhausted)
        }
        let promise = eventLoop.makePromise(of: UpstreamConnection.self)
        waiting[target, default: []].append(Waiter(promise: promise, owner: owner))
        return promise.futureResult
    }

    /// Takes `owner`'s request out of `target`'s queue, freeing its place for another, and fails its future with
    /// `UpstreamError.waiterCancelled`. Without this, a request whose client left kept its place (counted against
    /// `max_pending`) until a connection came for it and was handed straight back.
    ///
    /// The future fails on the next loop tick, not inside this call: the caller is usually ending the exchange the
    /// waiter belongs to, and must not be called back half-way through.
    /// - Returns: whether `owner` was waiting.
    @discardableResult
    func cancelWaiting(_ owner: ObjectIdentifier, target: TargetKey) -> Bool {
        eventLoop.assertInEventLoop()
        guard let index = waiting[target]?.firstIndex(where: { $0.owner == owner }), let waiter = waiting[target]?.remove(at: index) else { return false }
        eventLoop.execute { waiter.promise.fail(UpstreamError.waiterCancelled) }
        return true
    }

    /// Requests waiting for a connection to `target`.
    func waitingCount(_ target: TargetKey) -> Int { waiting[target]?.count ?? 0 }

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
            next.promise.succeed(connection)
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
            self.backoff[target, default: ConnectBackoff()].recordFailure(now: self.now())
            if self.open[target, default: 0] == 0 {
                // Nothing else is open or connecting to this target, and no connect starts before the backoff
                // passes: the queue would wait for nobody. (Before the backoff, each failure connected again for
                // the next waiter at once: a dead target took one refused or timed-out connect per queued request.)
                self.failWaiters(target, with: UpstreamError.connectFailed("\(error)"))
            }
            return self.eventLoop.makeFailedFuture(UpstreamError.connectFailed("\(error)"))
        }.map { channel in
            if self.backoff[target] != nil { self.backoff[target] = nil }  // success resets the backoff
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
        acquire(target, limits: limits, for: next.owner).cascade(to: next.promise)
    }

    private func failWaiters(_ target: TargetKey, with error: any Error) {
        guard let queue = waiting.removeValue(forKey: target) else { return }
        for waiter in queue { waiter.promise.fail(error) }
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

/// Connect backoff for one target: after the n-th failed connect in a row, no connect to it starts for
/// `min(initial × 2ⁿ⁻¹, maximum)` (50 ms, 100 ms, … 2 s by default); a successful connect forgets the failures.
///
/// Why: without it, every request to a dead target (and each queued one, as the failure handed its slot on) made a
/// fresh connect, a refused one costing a socket and a syscall round trip, a black-holed one a whole
/// `connect_timeout` per request. During the backoff a request that needs a new connection fails at once
/// (`UpstreamError.connectBackoff`), which the proxy treats like a refused connect: another target on retry, else
/// 502. Idle connections are still used. 2 s bounds how long a target that came back goes unused.
struct ConnectBackoff: Equatable {
    static let initial = TimeAmount.milliseconds(50)
    static let maximum = TimeAmount.seconds(2)

    /// Failed connects in a row.
    private(set) var failures = 0
    /// No connect starts before this.
    private(set) var retryAt = NIODeadline.uptimeNanoseconds(0)

    /// The delay after `failures` failed connects in a row (1 or more).
    static func delay(afterFailures failures: Int) -> TimeAmount {
        let doublings = min(failures - 1, 20)  // 50 ms × 2²⁰ is far past the maximum: no overflow
        return min(.nanoseconds(initial.nanoseconds << doublings), maximum)
    }

    mutating func recordFailure(now: NIODeadline) {
        failures += 1
        retryAt = now + Self.delay(afterFailures: failures)
    }
}
