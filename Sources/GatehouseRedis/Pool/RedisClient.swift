import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A pool of `pool_size` Redis connections with per-command timeouts and reconnect with backoff.
///
/// Never blocks: every call returns a future. A command goes to a ready connection, preferring one on the
/// caller's event loop (no thread hop); with none ready it waits for a connect already in flight, and fails at
/// once with `.unavailable` when every slot is backing off — the caller (the rate limiter) falls back rather
/// than queueing behind an outage. Picking a connection takes one uncontended lock.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    /// Flush (round trip) counts of all connections.
    public let statistics = RedisStatistics()
    private let loops: [any EventLoop]
    private let logger: Logger
    private let state: NIOLockedValueBox<RedisPoolStateMachine<RedisConnection, EventLoopPromise<RedisConnection>>>

    /// Connections are spread over the group's loops (slot i on loop i mod n). Call `start()` to connect.
    public init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger = Logger(label: "gatehouse.redis")) {
        self.configuration = configuration
        self.loops = Array(eventLoopGroup.makeIterator())
        self.logger = logger
        self.state = NIOLockedValueBox(RedisPoolStateMachine(
            size: configuration.poolSize,
            initialBackoff: configuration.reconnectBackoffInitial,
            maximumBackoff: configuration.reconnectBackoffMaximum
        ))
    }

    /// Opens every connection (in the background; commands sent meanwhile wait for the first).
    public func start() {
        run(state.withLockedValue { $0.start() })
    }

    /// Closes every connection; later commands fail with `.unavailable`.
    public func shutdown() -> EventLoopFuture<Void> {
        var closing: [EventLoopFuture<Void>] = []
        for action in state.withLockedValue({ $0.shutdown() }) {
            if case .close(let connections) = action {
                closing += connections.map { $0.close() }
            } else {
                run([action])
            }
        }
        return EventLoopFuture.andAllComplete(closing, on: loops[0])
    }

    /// Sends one command on a pooled connection.
    public func send(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        withConnection { $0.send(command) }
    }

    /// Runs a script with `EVALSHA` (see `RedisConnection.evaluate`).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue> {
        withConnection { $0.evaluate(script, keys: keys, arguments: arguments) }
    }

    /// Whether a connection is ready now (for readiness reporting and tests).
    public var isConnected: Bool {
        state.withLockedValue { $0.slots.contains { if case .ready = $0 { return true } else { return false } } }
    }

    private func withConnection(_ body: @escaping @Sendable (RedisConnection) -> EventLoopFuture<RESPValue>) -> EventLoopFuture<RESPValue> {
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? loops[0]
        let acquisition = state.withLockedValue {
            $0.acquire(preferred: { $0.eventLoop.inEventLoop }, makeWaiter: { loop.makePromise(of: RedisConnection.self) })
        }
        switch acquisition {
        case .use(let connection):
            return body(connection)
        case .wait(let waiter):
            return waiter.futureResult.flatMap(body)
        case .unavailable:
            return loop.makeFailedFuture(RedisError(code: .unavailable, message: "no connection to \(configuration) (reconnecting)"))
        case .shutDown:
            return loop.makeFailedFuture(RedisError(code: .unavailable, message: "the client is shut down"))
        }
    }

    private func run(_ actions: [RedisPoolStateMachine<RedisConnection, EventLoopPromise<RedisConnection>>.Action]) {
        for action in actions { run(action) }
    }

    private func run(_ action: RedisPoolStateMachine<RedisConnection, EventLoopPromise<RedisConnection>>.Action?) {
        guard let action else { return }
        switch action {
        case .connect(let slot):
            connect(slot: slot)
        case .scheduleReconnect(let slot, let delay):
            loops[slot % loops.count].scheduleTask(in: delay) { [self] in
                run(state.withLockedValue { $0.backoffElapsed(slot: slot) })
            }
        case .succeedWaiters(let waiters, let connection):
            for waiter in waiters { waiter.succeed(connection) }
        case .failWaiters(let waiters):
            for waiter in waiters {
                waiter.fail(RedisError(code: .unavailable, message: "could not connect to \(configuration)"))
            }
        case .close(let connections):
            for connection in connections { _ = connection.close() }
        }
    }

    private func connect(slot: Int) {
        let loop = loops[slot % loops.count]
        RedisConnection.connect(configuration: configuration, on: loop, statistics: statistics).whenComplete { [self] result in
            switch result {
            case .success(let connection):
                logger.debug("redis connection ready", metadata: ["slot": "\(slot)", "resp": "\(connection.protocolVersion)"])
                connection.closeFuture.whenComplete { [self] _ in
                    run(state.withLockedValue { $0.connectionClosed(slot: slot, connection) })
                }
                run(state.withLockedValue { $0.connected(slot: slot, connection) })
            case .failure(let error):
                let (actions, failures) = state.withLockedValue { pool in
                    (pool.connectFailed(slot: slot, jitter: Double.random(in: 0..<1)), pool.consecutiveFailures(slot: slot))
                }
                // The first failure of a slot is a warning; its retries during the same outage (one per backoff, up
                // to every 2 s per slot) are debug, so an outage is not a log line per attempt.
                logger.log(
                    level: failures <= 1 ? .warning : .debug, "redis connect failed",
                    metadata: ["slot": "\(slot)", "server": "\(configuration)", "error": "\(error)", "consecutive_failures": "\(failures)"]
                )
                run(actions)
            }
        }
    }
}
