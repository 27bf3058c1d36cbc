import NIOCore

/// The slots of a connection pool and what to do on each event, without I/O: connecting, ready, backing off.
///
/// Each slot has at most one connect attempt in flight (a slot is only asked to connect from `idle`,
/// `backingOff` or after its ready connection closed). Reconnect waits grow exponentially per consecutive
/// failure of that slot, capped, with "equal jitter" (half fixed, half random) so that gateways restarted
/// together, or all slots of one pool, do not retry in lock step against a recovering server.
struct RedisPoolStateMachine<Connection: AnyObject, Waiter> {
    enum Slot {
        case idle
        case connecting
        case ready(Connection)
        case backingOff
        case shutDown
    }

    enum Action {
        case connect(slot: Int)
        case scheduleReconnect(slot: Int, after: TimeAmount)
        case succeedWaiters([Waiter], Connection)
        case failWaiters([Waiter])
        case close([Connection])
    }

    enum Acquisition {
        case use(Connection)
        /// No slot is ready, one is connecting: this waiter was queued until it is.
        case wait(Waiter)
        /// No slot is ready nor connecting: fail now rather than queue behind a backoff.
        case unavailable
        case shutDown
    }

    private(set) var slots: [Slot]
    private var failures: [Int]
    private var waiters: [Waiter] = []
    private var nextSlot = 0
    private let initialBackoff: TimeAmount
    private let maximumBackoff: TimeAmount

    init(size: Int, initialBackoff: TimeAmount, maximumBackoff: TimeAmount) {
        self.slots = Array(repeating: .idle, count: size)
        self.failures = Array(repeating: 0, count: size)
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
    }

    /// Connects every idle slot.
    mutating func start() -> [Action] {
        var actions: [Action] = []
        for index in slots.indices {
            if case .idle = slots[index] {
                slots[index] = .connecting
                actions.append(.connect(slot: index))
            }
        }
        return actions
    }

    /// A ready connection, round robin, preferring one for which `preferred` is true (the caller's event loop).
    mutating func acquire(preferred: (Connection) -> Bool, makeWaiter: () -> Waiter) -> Acquisition {
        var fallback: Connection?
        var anyConnecting = false
        let count = slots.count
        for offset in 0..<count {
            let index = (nextSlot + offset) % count
            switch slots[index] {
            case .ready(let connection):
                if preferred(connection) {
                    nextSlot = (index + 1) % count
                    return .use(connection)
                }
                if fallback == nil { fallback = connection }
            case .connecting:
                anyConnecting = true
            case .shutDown:
                return .shutDown
            case .idle, .backingOff:
                break
            }
        }
        if let fallback {
            nextSlot = (nextSlot + 1) % count
            return .use(fallback)
        }
        guard anyConnecting else { return .unavailable }
        let waiter = makeWaiter()
        waiters.append(waiter)
        return .wait(waiter)
    }

    mutating func connected(slot: Int, _ connection: Connection) -> Action? {
        guard case .connecting = slots[slot] else { return .close([connection]) }  // shut down meanwhile
        slots[slot] = .ready(connection)
        failures[slot] = 0
        guard !waiters.isEmpty else { return nil }
        defer { waiters = [] }
        return .succeedWaiters(waiters, connection)
    }

    /// A connect attempt failed; `jitter` in 0..<1 picks where in the upper half of the wait it lands.
    mutating func connectFailed(slot: Int, jitter: Double) -> [Action] {
        guard case .connecting = slots[slot] else { return [] }
        failures[slot] += 1
        slots[slot] = .backingOff
        var actions: [Action] = [.scheduleReconnect(slot: slot, after: backoff(failures: failures[slot], jitter: jitter))]
        let stillConnecting = slots.contains { if case .connecting = $0 { return true } else { return false } }
        if !stillConnecting && !waiters.isEmpty {
            actions.append(.failWaiters(waiters))
            waiters = []
        }
        return actions
    }

    /// Connect attempts of `slot` that failed since it last connected.
    func consecutiveFailures(slot: Int) -> Int { failures[slot] }

    /// The wait before attempt `failures + 1`: min(cap, initial × 2^(failures−1)), of which the upper half is
    /// jittered.
    func backoff(failures: Int, jitter: Double) -> TimeAmount {
        let exponent = min(failures - 1, 30)
        let (scaled, overflow) = initialBackoff.nanoseconds.multipliedReportingOverflow(by: Int64(1) << exponent)
        let full = overflow ? maximumBackoff.nanoseconds : min(scaled, maximumBackoff.nanoseconds)
        let half = full / 2
        return .nanoseconds(full - half + Int64(Double(half) * min(max(jitter, 0), 1)))
    }

    /// The connection of `slot` closed (timeout, server gone): reconnect at once; failures back off from there.
    mutating func connectionClosed(slot: Int, _ connection: Connection) -> Action? {
        guard case .ready(let current) = slots[slot], current === connection else { return nil }
        slots[slot] = .connecting
        return .connect(slot: slot)
    }

    mutating func backoffElapsed(slot: Int) -> Action? {
        guard case .backingOff = slots[slot] else { return nil }
        slots[slot] = .connecting
        return .connect(slot: slot)
    }

    mutating func shutdown() -> [Action] {
        var connections: [Connection] = []
        for index in slots.indices {
            if case .ready(let connection) = slots[index] { connections.append(connection) }
            slots[index] = .shutDown
        }
        var actions: [Action] = [.close(connections)]
        if !waiters.isEmpty {
            actions.append(.failWaiters(waiters))
            waiters = []
        }
        return actions
    }
}

extension RedisPoolStateMachine: Sendable where Connection: Sendable, Waiter: Sendable {}
extension RedisPoolStateMachine.Slot: Sendable where Connection: Sendable, Waiter: Sendable {}
