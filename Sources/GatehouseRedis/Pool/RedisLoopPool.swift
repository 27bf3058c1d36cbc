import Logging
import NIOCore

/// One event loop's Redis connections: `pool_size` of them, all on that loop, used only by commands sent from it.
///
/// Confined to its loop: every member but `eventLoop` is used there only (`@unchecked Sendable` so that the futures'
/// callbacks, which NIO runs on this loop, may capture it; `assertInEventLoop` checks it in debug builds). A command
/// sent from the loop therefore takes no lock and no thread hop, and its reply completes on the same loop, where the
/// gateway's request resumes. Before, the connections lived on the process's shared loops and every decision
/// crossed threads twice (README "Cluster-wide rate limits on Redis" has the measurements).
final class RedisLoopPool: @unchecked Sendable {
    typealias Machine = RedisPoolStateMachine<RedisConnection, EventLoopPromise<RedisConnection>>

    /// A connection now, or later (the loop's first commands wait for its first connect; a failure is a failed
    /// future).
    enum Acquired {
        case ready(RedisConnection)
        case later(EventLoopFuture<RedisConnection>)
    }

    let eventLoop: any EventLoop
    private let shared: RedisClient.Shared
    private var state: Machine
    /// This pool's ready connections as last added to `shared.readyConnections`.
    private var reportedReady = 0

    init(eventLoop: any EventLoop, shared: RedisClient.Shared) {
        self.eventLoop = eventLoop
        self.shared = shared
        let configuration = shared.configuration
        self.state = Machine(
            size: configuration.poolSize, initialBackoff: configuration.reconnectBackoffInitial, maximumBackoff: configuration.reconnectBackoffMaximum
        )
    }

    /// Opens every connection (in the background; commands sent meanwhile wait for the first).
    func start() {
        eventLoop.assertInEventLoop()
        run(state.start())
    }

    /// A ready connection, round robin over this loop's.
    func acquire() -> Acquired {
        eventLoop.assertInEventLoop()
        switch state.acquire(preferred: { _ in true }, makeWaiter: { eventLoop.makePromise(of: RedisConnection.self) }) {
        case .use(let connection):
            return .ready(connection)
        case .wait(let waiter):
            return .later(waiter.futureResult)
        case .unavailable:
            return .later(eventLoop.makeFailedFuture(RedisError(code: .unavailable, message: "no connection to \(shared.configuration) (reconnecting)", isWaitingToReconnect: true)))
        case .shutDown:
            return .later(eventLoop.makeFailedFuture(RedisError(code: .unavailable, message: "the client is shut down")))
        }
    }

    /// Closes every connection; later commands fail with `.unavailable`.
    func shutdown() -> EventLoopFuture<Void> {
        eventLoop.assertInEventLoop()
        var closing: [EventLoopFuture<Void>] = []
        for action in state.shutdown() {
            if case .close(let connections) = action {
                closing += connections.map { $0.close() }
            } else {
                run(action)
            }
        }
        reportReady()
        return EventLoopFuture.andAllComplete(closing, on: eventLoop)
    }

    private func run(_ actions: [Machine.Action]) {
        for action in actions { run(action) }
    }

    private func run(_ action: Machine.Action?) {
        guard let action else { return }
        switch action {
        case .connect(let slot):
            connect(slot: slot)
        case .scheduleReconnect(let slot, let delay):
            eventLoop.scheduleTask(in: delay) { [self] in
                run(state.backoffElapsed(slot: slot))
            }
        case .succeedWaiters(let waiters, let connection):
            for waiter in waiters { waiter.succeed(connection) }
        case .failWaiters(let waiters):
            for waiter in waiters {
                waiter.fail(RedisError(code: .unavailable, message: "could not connect to \(shared.configuration)"))
            }
        case .close(let connections):
            for connection in connections { _ = connection.close() }
        }
        reportReady()
    }

    /// Keeps `RedisClient.isConnected` (the sum over loops) current: one atomic add per change, not per command.
    private func reportReady() {
        let ready = state.slots.reduce(0) { count, slot in if case .ready = slot { count + 1 } else { count } }
        if ready != reportedReady {
            shared.readyConnections.add(ready - reportedReady, ordering: .relaxed)
            reportedReady = ready
        }
    }

    private func connect(slot: Int) {
        let shared = self.shared
        RedisConnection.connect(configuration: shared.configuration, on: eventLoop, statistics: shared.statistics).whenComplete { [self] result in
            switch result {
            case .success(let connection):
                shared.logger.debug("redis connection ready", metadata: ["slot": "\(slot)", "resp": "\(connection.protocolVersion)"])
                connection.closeFuture.whenComplete { [self] _ in
                    run(state.connectionClosed(slot: slot, connection))
                }
                run(state.connected(slot: slot, connection))
            case .failure(let error):
                let actions = state.connectFailed(slot: slot, jitter: Double.random(in: 0..<1))
                let failures = state.consecutiveFailures(slot: slot)
                // The first failure of a slot is a warning; its retries during the same outage (one per backoff, up
                // to every 2 s per slot) are debug, so an outage is not a log line per attempt.
                shared.logger.log(
                    level: failures <= 1 ? .warning : .debug, "redis connect failed",
                    metadata: ["slot": "\(slot)", "server": "\(shared.configuration)", "error": "\(error)", "consecutive_failures": "\(failures)"]
                )
                run(actions)
            }
        }
    }
}
