/// A route's circuit breaker: closed → open → half-open → closed (or open again), with an injected clock.
///
/// - **Closed:** every request passes; results go into a rolling window (`RollingWindow`). Below `minRequests`
///   results in the window nothing is decided; at or above, the breaker opens when failures/requests ≥ `errorRate`
///   or, with `slowCall`, slow/requests ≥ its rate.
/// - **Open:** every request is refused until `openFor` has passed, then the breaker is half-open. Each consecutive
///   trip doubles the interval, up to `maxOpenFor`; closing resets the doubling.
/// - **Half-open:** exactly `halfOpenRequests` trial requests pass, the others are refused as if open. All trials
///   succeed → closed, with an empty window; any trial fails (or is slow) → open again, the interval doubled.
///
/// **Results from another state.** Each transition starts a new epoch, and `admit` hands out a ticket naming the
/// epoch a request was admitted in. A result counts only in the epoch of its ticket: a request admitted while closed
/// that finishes after the breaker opened (or after it half-opened) says nothing about the trials and is ignored,
/// as is a trial of an earlier half-open period finishing during a later one. Without the ticket, a slow request of
/// the closed period finishing during half-open would count as a trial and could close the breaker with fewer real
/// trials than configured, or re-open it for a failure seen before the trials began.
///
/// Every admitted ticket must be recorded exactly once (`.cancelled` when there is no verdict), or a half-open trial
/// slot stays taken: the breaker has no timeout of its own, deadlines come only from the gateway's `timeouts`.
public struct CircuitBreaker: Sendable {
    enum Phase: Sendable, Hashable {
        case closed
        case open(until: UInt64)
        case halfOpen(admitted: Int, succeeded: Int)
    }

    public let settings: CircuitBreakerSettings
    private(set) var phase: Phase = .closed
    /// Changes on every transition; tickets carry it.
    public private(set) var epoch: UInt64 = 0
    /// Times opened since creation.
    public private(set) var trips = 0
    /// Results ignored because they came from a request admitted in an earlier state.
    public private(set) var staleResults = 0
    private var consecutiveTrips = 0
    private var window: RollingWindow

    public init(settings: CircuitBreakerSettings) {
        self.settings = settings
        window = RollingWindow(window: settings.window, buckets: settings.buckets)
    }

    /// Decides whether a request may go to the upstream at `now`.
    public mutating func admit(now: UInt64) -> BreakerAdmission {
        switch phase {
        case .closed:
            return .allow(BreakerTicket(epoch: epoch))
        case .open(let until):
            guard now >= until else { return .refuse(retryAfter: until - now) }
            transition(to: .halfOpen(admitted: 0, succeeded: 0))
            return admit(now: now)
        case .halfOpen(let admitted, let succeeded):
            guard admitted < settings.halfOpenRequests else { return .refuse(retryAfter: 1_000_000_000) }
            phase = .halfOpen(admitted: admitted + 1, succeeded: succeeded)
            return .allowTrial(BreakerTicket(epoch: epoch))
        }
    }

    /// Records how a request admitted with `ticket` ended, at `now`.
    public mutating func record(_ result: CallResult, ticket: BreakerTicket, now: UInt64) {
        guard ticket.epoch == epoch else {
            staleResults += 1
            return
        }
        switch phase {
        case .closed:
            switch result {
            case .cancelled:
                return
            case .failure:
                window.record(now: now, failure: true, slow: false)
            case .success(let duration):
                window.record(now: now, failure: false, slow: isSlow(duration))
            }
            let totals = window.totals(now: now)
            if shouldTrip(totals) { trip(now: now) }
        case .open:
            // No ticket is handed out while open, so a matching epoch cannot happen; nothing to count.
            staleResults += 1
        case .halfOpen(let admitted, let succeeded):
            switch result {
            case .cancelled:
                phase = .halfOpen(admitted: admitted - 1, succeeded: succeeded)
            case .failure:
                trip(now: now)
            case .success(let duration):
                if isSlow(duration) {
                    trip(now: now)
                } else if succeeded + 1 >= settings.halfOpenRequests {
                    close()
                } else {
                    phase = .halfOpen(admitted: admitted, succeeded: succeeded + 1)
                }
            }
        }
    }

    /// The state as `GET /breakers` shows it at `now` (an open breaker whose interval has passed shows as half-open,
    /// which it becomes at the next `admit`).
    public func snapshot(now: UInt64) -> BreakerSnapshot {
        var snapshot = BreakerSnapshot(
            state: .closed, requests: 0, failures: 0, slow: 0, trips: trips, nextHalfOpenIn: nil,
            openInterval: openInterval(afterTrips: max(1, consecutiveTrips)), trialsAdmitted: 0, trialsSucceeded: 0
        )
        switch phase {
        case .closed:
            let totals = window.totals(now: now)
            snapshot.requests = totals.requests
            snapshot.failures = totals.failures
            snapshot.slow = totals.slow
        case .open(let until):
            if now >= until {
                snapshot.state = .halfOpen
            } else {
                snapshot.state = .open
                snapshot.nextHalfOpenIn = until - now
            }
        case .halfOpen(let admitted, let succeeded):
            snapshot.state = .halfOpen
            snapshot.trialsAdmitted = admitted
            snapshot.trialsSucceeded = succeeded
        }
        return snapshot
    }

    /// The state as of the last call (no clock: an open breaker stays open here until an `admit` after its interval).
    public var state: BreakerState {
        switch phase {
        case .closed: .closed
        case .open: .open
        case .halfOpen: .halfOpen
        }
    }

    // MARK: Transitions

    private func isSlow(_ duration: UInt64) -> Bool {
        guard let slowCall = settings.slowCall else { return false }
        return duration >= slowCall.duration
    }

    private func shouldTrip(_ totals: RollingWindow.Totals) -> Bool {
        guard totals.requests >= settings.minRequests else { return false }
        let requests = Double(totals.requests)
        if Double(totals.failures) >= settings.errorRate * requests { return true }
        if let slowCall = settings.slowCall, Double(totals.slow) >= slowCall.rate * requests { return true }
        return false
    }

    /// `openFor × 2^(trips − 1)`, capped at `maxOpenFor`.
    private func openInterval(afterTrips trips: Int) -> UInt64 {
        var interval = settings.openFor
        var doublings = trips - 1
        while doublings > 0, interval < settings.maxOpenFor {
            interval = interval > settings.maxOpenFor / 2 ? settings.maxOpenFor : interval * 2
            doublings -= 1
        }
        return min(interval, settings.maxOpenFor)
    }

    private mutating func trip(now: UInt64) {
        consecutiveTrips += 1
        trips += 1
        transition(to: .open(until: now + openInterval(afterTrips: consecutiveTrips)))
    }

    private mutating func close() {
        consecutiveTrips = 0
        window.reset()
        transition(to: .closed)
    }

    private mutating func transition(to next: Phase) {
        phase = next
        epoch &+= 1
    }
}
