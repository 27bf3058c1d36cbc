import Synchronization

/// A `CircuitBreaker` shared by every event loop of the gateway (a breaker is per route, a route is served by all
/// loops).
///
/// **The closed-state admit takes no lock.** The state and epoch are published in one atomic word after every
/// change; `admit` reads it and, when closed, answers with a ticket of that epoch at once — the proceed path of the
/// pipeline costs one atomic load. Everything else (results, open and half-open admits, snapshots) goes through a
/// `Mutex` around the value type, so there is one implementation of the rules. A request admitted from a word that
/// another loop is just replacing carries the old epoch, and its result is ignored as stale, as the value type's
/// rule says. Measured with `scripts/bench-policies.sh`: see README, "Rate limits, breakers, admission: the model".
public final class SharedCircuitBreaker: Sendable {
    private static let closedCode: UInt64 = 0
    private let breaker: Mutex<CircuitBreaker>
    /// `epoch << 2 | state` (0 closed, 1 open, 2 half-open).
    private let published: Atomic<UInt64>

    public init(settings: CircuitBreakerSettings) {
        let breaker = CircuitBreaker(settings: settings)
        self.breaker = Mutex(breaker)
        published = Atomic(Self.word(breaker))
    }

    public var settings: CircuitBreakerSettings { breaker.withLock { $0.settings } }

    /// See `CircuitBreaker.admit(now:)`.
    public func admit(now: UInt64) -> BreakerAdmission {
        let word = published.load(ordering: .acquiring)
        if word & 3 == Self.closedCode { return .allow(BreakerTicket(epoch: word >> 2)) }
        return breaker.withLock { breaker in
            let admission = breaker.admit(now: now)
            published.store(Self.word(breaker), ordering: .releasing)
            return admission
        }
    }

    /// See `CircuitBreaker.record(_:ticket:now:)`. A result whose epoch is already past is dropped without the lock.
    public func record(_ result: CallResult, ticket: BreakerTicket, now: UInt64) {
        guard published.load(ordering: .acquiring) >> 2 == ticket.epoch else { return }
        breaker.withLock { breaker in
            breaker.record(result, ticket: ticket, now: now)
            published.store(Self.word(breaker), ordering: .releasing)
        }
    }

    /// See `CircuitBreaker.snapshot(now:)`.
    public func snapshot(now: UInt64) -> BreakerSnapshot {
        breaker.withLock { $0.snapshot(now: now) }
    }

    private static func word(_ breaker: CircuitBreaker) -> UInt64 {
        let code: UInt64
        switch breaker.state {
        case .closed: code = closedCode
        case .open: code = 1
        case .halfOpen: code = 2
        }
        return breaker.epoch << 2 | code
    }
}
