import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Redis connections per event loop: each loop that sends a command gets its own pool of `pool_size` connections on
/// that loop (`RedisLoopPool`), opened at its first command, with per-command timeouts and reconnect with backoff.
///
/// `pool_size` is therefore per event loop: a gateway with `event_loop_threads: 4` and `pool_size: 1` holds four
/// connections. One per loop is enough for the limiter: a loop's commands of one tick leave in one write on it
/// (pipelined), and a second connection on the same loop would split that write in two.
///
/// Never blocks: every call returns a future, completed on the loop the command was sent from. With no connection
/// ready a command waits for a connect already in flight, and fails at once with `.unavailable` when every slot of
/// its loop is backing off — the caller (the rate limiter) falls back rather than queueing behind an outage.
/// Finding the caller's pool takes no lock: the pools are a list published with atomics (`RedisLoopPools`), read
/// with one acquire load per loop, and appended to once per loop.
public final class RedisClient: Sendable {
    /// What every loop's pool shares.
    final class Shared: Sendable {
        let configuration: RedisConfiguration
        let statistics: RedisStatistics
        let logger: Logger
        /// Ready connections over all loops (`isConnected`).
        let readyConnections = Atomic<Int>(0)

        init(configuration: RedisConfiguration, statistics: RedisStatistics, logger: Logger) {
            self.configuration = configuration
            self.statistics = statistics
            self.logger = logger
        }
    }

    public let configuration: RedisConfiguration
    /// Flush (round trip) counts of all connections.
    public let statistics: RedisStatistics
    /// The loops of callers that are on no event loop (tests, the command line) and of `start()`.
    private let group: any EventLoopGroup
    private let shared: Shared
    let pools = RedisLoopPools()
    private let isShutDown = Atomic<Bool>(false)

    /// `eventLoopGroup` serves callers that are not on an event loop; callers on a loop (the gateway's) get
    /// connections on their own loop. Call `start()` to connect ahead of the first command.
    public init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger = Logger(label: "gatehouse.redis")) {
        let statistics = RedisStatistics()
        self.configuration = configuration
        self.statistics = statistics
        self.group = eventLoopGroup
        self.shared = Shared(configuration: configuration, statistics: statistics, logger: logger)
    }

    /// Opens the pools of `eventLoopGroup`'s loops now (in the background; commands sent meanwhile wait for the
    /// first connection). Other loops' pools open at their first command.
    public func start() {
        for loop in group.makeIterator() {
            loop.execute { [self] in _ = pool(on: loop) }
        }
    }

    /// Opens the pool of `eventLoop` now rather than at its first command.
    public func warm(_ eventLoop: any EventLoop) {
        eventLoop.execute { [self] in _ = pool(on: eventLoop) }
    }

    /// Closes every connection; later commands fail with `.unavailable`. Each loop's pool closes on its loop: call it
    /// before shutting down the loops that sent commands (their connections close with them anyway). A second call
    /// does nothing.
    public func shutdown() -> EventLoopFuture<Void> {
        guard !isShutDown.exchange(true, ordering: .sequentiallyConsistent) else { return group.next().makeSucceededVoidFuture() }
        let closing = pools.all.map { pool in pool.eventLoop.flatSubmit { pool.shutdown() } }
        return EventLoopFuture.andAllComplete(closing, on: group.next())
    }

    /// Sends one command on a connection of `eventLoop` (default: the caller's loop, else one of `eventLoopGroup`'s);
    /// the future completes there.
    public func send(_ command: RedisCommand, on eventLoop: (any EventLoop)? = nil) -> EventLoopFuture<RESPValue> {
        let loop = eventLoop ?? MultiThreadedEventLoopGroup.currentEventLoop ?? group.next()
        guard loop.inEventLoop else { return loop.flatSubmit { [self] in send(command, on: loop) } }
        switch pool(on: loop).acquire() {
        case .ready(let connection): return connection.send(command)
        case .later(let connection): return connection.flatMap { $0.send(command) }
        }
    }

    /// Runs a script with `EVALSHA` (see `RedisConnection.evaluate`) on a connection of `eventLoop` (as `send`).
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String], on eventLoop: (any EventLoop)? = nil) -> EventLoopFuture<RESPValue> {
        evaluate(script, RedisCommand(["EVALSHA", script.sha1, String(keys.count)] + keys + arguments), on: eventLoop)
    }

    /// `EVALSHA` of `script` with the command already built (`GCRACall` encodes its fixed part once per limit).
    func evaluate<Command: RedisCommandEncodable>(_ script: RedisScript, _ command: Command, on eventLoop: (any EventLoop)?) -> EventLoopFuture<RESPValue> {
        let loop = eventLoop ?? MultiThreadedEventLoopGroup.currentEventLoop ?? group.next()
        // The gateway's case: on the loop, whose own connection takes the command (no lock, no hop, no closure).
        guard loop.inEventLoop else { return loop.flatSubmit { [self] in evaluate(script, command, on: loop) } }
        switch pool(on: loop).acquire() {
        case .ready(let connection): return connection.evaluate(script, command)
        case .later(let connection): return connection.flatMap { $0.evaluate(script, command) }
        }
    }

    /// Whether a connection is ready now, on any loop (for readiness reporting and tests).
    public var isConnected: Bool { shared.readyConnections.load(ordering: .relaxed) > 0 }

    /// The pool of `loop`, created (and its connections opened) at the loop's first command; on `loop`.
    private func pool(on loop: any EventLoop) -> RedisLoopPool {
        if let pool = pools.find(loop) { return pool }
        let pool = RedisLoopPool(eventLoop: loop, shared: shared)
        pools.append(pool)
        if isShutDown.load(ordering: .sequentiallyConsistent) {
            _ = pool.shutdown()  // appended after shutdown's walk, or seen by it: shut down either way
        } else {
            pool.start()
        }
        return pool
    }
}

/// The loops' pools: a singly linked list whose links are set once (`AtomicLazyReference`), so a lookup is a walk of
/// acquire loads (one node per loop that has used the client) and an append is a compare-and-swap on the last link.
/// Only a loop appends its own pool, so no loop is ever in the list twice.
final class RedisLoopPools: Sendable {
    final class Node: Sendable {
        let pool: RedisLoopPool
        let next = AtomicLazyReference<Node>()
        init(_ pool: RedisLoopPool) { self.pool = pool }
    }

    private let head = AtomicLazyReference<Node>()

    func find(_ loop: any EventLoop) -> RedisLoopPool? {
        var node = head.load()
        while let current = node {
            if current.pool.eventLoop === loop { return current.pool }
            node = current.next.load()
        }
        return nil
    }

    func append(_ pool: RedisLoopPool) {
        let node = Node(pool)
        var last = head.storeIfNil(node)
        while last !== node { last = last.next.storeIfNil(node) }
    }

    var all: [RedisLoopPool] {
        var pools: [RedisLoopPool] = []
        var node = head.load()
        while let current = node {
            pools.append(current.pool)
            node = current.next.load()
        }
        return pools
    }
}
