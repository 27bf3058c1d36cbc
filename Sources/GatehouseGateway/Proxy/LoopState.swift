import GatehouseObservability
import NIOCore

/// Per-event-loop state of the data path: the upstream pool and the load balancers' counters. Confined to its
/// loop, so choosing a target and leasing a connection take no lock.
final class LoopState {
    let pool: UpstreamPool
    let eventLoop: any EventLoop
    private var roundRobin: [ObjectIdentifier: Int] = [:]
    /// Requests in flight per target from this loop (least-request balancing).
    private var active: [TargetKey: Int] = [:]
    /// Downstream connections on this loop, for the ticker.
    /// Strong references: a handler unregisters itself when it leaves the pipeline (weak references would put every
    /// handler's reference count on the slow path).
    private var handlers: [ObjectIdentifier: DownstreamHandler] = [:]
    private var ticker: RepeatedTask?

    /// How often deadlines are checked. Timeouts fire within this of their due time; in exchange no timer is
    /// scheduled or cancelled per request (that cost 12% of the proxy's CPU).
    static let tickInterval: TimeAmount = .milliseconds(100)

    /// This loop's copy of the compiled configuration, refreshed by the ticker (a reload reaches every loop within
    /// one tick) so that a request reads it without a lock.
    private(set) var gateway: CompiledGateway?
    private var runtime: GatewayRuntime?

    /// The data path's clock (see `GatewayClock`).
    let clock: GatewayClock
    /// Request ids for this loop's requests: a prefix of the loop's own, no lock.
    var requestIDs = RequestIDGenerator()
    /// Tallies of finished exchanges (the `counters` observer).
    var outcomes = OutcomeCounters()
    /// Told of every finished exchange, in order.
    var observers: [ExchangeObserver]
    /// The Prometheus metrics of this loop (the `metrics` observer, the attempt hooks, the ticker's lag).
    var metrics = GatewayLoopMetrics()
    /// Access-log lines waiting for the writer, and the writer (nil: no access log).
    var accessLog = AccessLogBuffer()
    /// The buffer each access-log line is built in, reused from line to line.
    var accessLogLineStorage: [UInt8] = []
    let accessLogWriter: AccessLogWriter?
    /// When the previous tick ended (real time), to measure how late the next one runs.
    var lastTickEnd: NIODeadline?
    /// Trace and span ids for this loop's requests: no lock, no system call.
    var traceIDs = TraceIDGenerator()

    init(eventLoop: any EventLoop, clock: GatewayClock = .system, accessLog: AccessLogWriter? = nil) {
        self.eventLoop = eventLoop
        self.clock = clock
        self.pool = UpstreamPool(eventLoop: eventLoop)
        self.accessLogWriter = accessLog
        self.observers = accessLog == nil ? [.counters, .metrics, .tracing] : [.counters, .metrics, .accessLog, .tracing]
    }

    /// Exchanges in progress on this loop's connections (read by the scrape, not per request).
    var exchangesInFlight: Int { handlers.values.reduce(0) { $0 + ($1.exchange == nil ? 0 : 1) } }

    /// The configuration for a new request.
    func currentGateway(_ runtime: GatewayRuntime) -> CompiledGateway {
        if let gateway, self.runtime === runtime { return gateway }
        self.runtime = runtime
        let snapshot = runtime.snapshot
        gateway = snapshot
        return snapshot
    }

    func register(_ handler: DownstreamHandler) {
        handlers[ObjectIdentifier(handler)] = handler
        if ticker == nil {
            ticker = eventLoop.scheduleRepeatedTask(initialDelay: Self.tickInterval, delay: Self.tickInterval) { [weak self] _ in
                self?.tick()
            }
        }
    }

    func unregister(_ handler: DownstreamHandler) {
        handlers[ObjectIdentifier(handler)] = nil
    }

    private func tick() {
        let now = clock.now()
        if let runtime { gateway = runtime.snapshot }
        for handler in handlers.values { handler.tick(now: now) }
        pool.expireIdle(now: now)
        // Queue timeouts of the clusters' admission control (shared queues: any loop's tick may answer any waiter;
        // NIO runs each answer on its waiter's loop).
        if let gateway { for admission in gateway.admissions { admission.expire(now: now) } }
        tickObservability()
    }

    func stopTicker() {
        ticker?.cancel()
        ticker = nil
    }

    /// Picks a target: round robin, or the less loaded of two random ones (power of two choices). Unavailable
    /// targets (down, ejected, or in `excluding`) are skipped; nil when none is left.
    func pickTarget(_ cluster: CompiledCluster, excluding: TargetKey? = nil, now: NIODeadline) -> TargetKey? {
        let targets = cluster.targets
        let count = targets.count
        guard count > 0 else { return nil }
        switch cluster.loadBalancing {
        case .roundRobin:
            let key = ObjectIdentifier(cluster)
            let start = roundRobin[key, default: 0]
            for offset in 0..<count {
                let target = targets[(start + offset) % count]
                if target != excluding, cluster.health.isAvailable(target, now: now) {
                    roundRobin[key] = (start + offset + 1) % count
                    return target
                }
            }
            return nil
        case .leastRequest:
            let candidates = targets.filter { $0 != excluding && cluster.health.isAvailable($0, now: now) }
            guard !candidates.isEmpty else { return nil }
            if candidates.count == 1 { return candidates[0] }
            let first = candidates.randomElement()!
            var second = candidates.randomElement()!
            while second == first { second = candidates.randomElement()! }
            return active[first, default: 0] <= active[second, default: 0] ? first : second
        }
    }

    func started(_ target: TargetKey) { active[target, default: 0] += 1 }
    func finished(_ target: TargetKey) { active[target, default: 1] -= 1 }
}

/// `LoopState` for every loop of the group, created up front. Each state is only ever touched on its own loop
/// (`state(for:)` asserts it), which is what makes the unchecked Sendable sound.
final class LoopStates: @unchecked Sendable {
    private struct Entry {
        let loop: any EventLoop
        let state: LoopState
    }

    private let states: [ObjectIdentifier: Entry]
    /// The clock every loop's data path reads.
    let clock: GatewayClock

    init(group: any EventLoopGroup, clock: GatewayClock = .system, accessLog: AccessLogWriter? = nil) {
        var states: [ObjectIdentifier: Entry] = [:]
        for loop in group.makeIterator() {
            states[ObjectIdentifier(loop)] = Entry(loop: loop, state: LoopState(eventLoop: loop, clock: clock, accessLog: accessLog))
        }
        self.states = states
        self.clock = clock
    }

    func state(for loop: any EventLoop) -> LoopState {
        loop.assertInEventLoop()
        return states[ObjectIdentifier(loop)]!.state
    }

    /// `body`'s value from every loop, each computed on its own loop.
    func collect<Value: Sendable>(on eventLoop: any EventLoop, _ body: @escaping @Sendable (LoopState) -> Value) -> EventLoopFuture<[Value]> {
        let futures = states.values.map { entry in
            let loop = entry.loop
            return loop.submit { body(self.state(for: loop)) }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: eventLoop)
    }

    /// Runs `body` on every loop with its state.
    func forEach(_ body: @escaping @Sendable (LoopState) -> Void) {
        for entry in states.values {
            let loop = entry.loop
            loop.execute { body(self.state(for: loop)) }
        }
    }
}
