import Synchronization

/// Counters of a client, for benchmarks and the gateway's metrics: how many writes (`flush`es, each one round
/// trip for the commands in it) the connections made. Relaxed atomics: one increment per flush, not per command.
public final class RedisStatistics: Sendable {
    private let flushes = Atomic<Int>(0)

    public init() {}

    func recordFlush() {
        flushes.add(1, ordering: .relaxed)
    }

    /// Writes so far over all connections; several pipelined commands can share one.
    public var flushCount: Int { flushes.load(ordering: .relaxed) }
}
