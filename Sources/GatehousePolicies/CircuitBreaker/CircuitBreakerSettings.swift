/// A route's circuit breaker settings. The defaults are Hystrix's (a 10-second window in 10 buckets, 20 requests
/// before any decision, open at 50% failures, 5 s open), plus the doubling open interval and the half-open trial
/// budget of the configuration contract.
public struct CircuitBreakerSettings: Sendable, Hashable {
    /// What counts as a slow call, and at which share of slow calls the breaker opens.
    public struct SlowCall: Sendable, Hashable {
        /// A success that took at least this long (ns) is slow.
        public var duration: UInt64
        /// Open at or above this share (0…1) of slow calls in the window.
        public var rate: Double

        public init(duration: UInt64, rate: Double) {
            self.duration = duration
            self.rate = rate
        }
    }

    /// The rolling window, ns. Default 10 s.
    public var window: UInt64
    /// Buckets of the window; results leave the window one bucket at a time. Default 10.
    public var buckets: Int
    /// No decision below this many results in the window. Default 20.
    public var minRequests: Int
    /// Open at or above this share (0…1) of failures in the window. Default 0.5.
    public var errorRate: Double
    /// Slow calls (optional). Default none.
    public var slowCall: SlowCall?
    /// The first open interval, ns. Default 5 s.
    public var openFor: UInt64
    /// The open interval doubles on each consecutive trip up to this, ns. Default 60 s.
    public var maxOpenFor: UInt64
    /// Trial requests let through while half-open; all must succeed to close. Default 3.
    public var halfOpenRequests: Int

    public init(
        window: UInt64 = 10_000_000_000, buckets: Int = 10, minRequests: Int = 20, errorRate: Double = 0.5,
        slowCall: SlowCall? = nil, openFor: UInt64 = 5_000_000_000, maxOpenFor: UInt64 = 60_000_000_000,
        halfOpenRequests: Int = 3
    ) {
        self.window = max(1, window)
        self.buckets = max(1, buckets)
        self.minRequests = max(1, minRequests)
        self.errorRate = errorRate
        self.slowCall = slowCall
        self.openFor = openFor
        self.maxOpenFor = max(openFor, maxOpenFor)
        self.halfOpenRequests = max(1, halfOpenRequests)
    }
}

/// A breaker's state, spelled as in `GET /breakers`.
public enum BreakerState: String, Sendable {
    case closed, open
    case halfOpen = "half_open"
}

/// Identifies the state a request was admitted in (the breaker's epoch, which changes on every transition), so that
/// its result can be told apart from results of requests admitted later. Pass it back to `record`.
public struct BreakerTicket: Sendable, Hashable {
    public let epoch: UInt64
    public init(epoch: UInt64) { self.epoch = epoch }
}

/// What the breaker says about one request.
public enum BreakerAdmission: Sendable, Equatable {
    /// Closed: forward it; record its result with the ticket.
    case allow(BreakerTicket)
    /// Half-open: forward it as one of the trial requests; record its result with the ticket.
    case allowTrial(BreakerTicket)
    /// Open (or half-open with every trial slot taken): answer 503 or the fallback. `retryAfter` is the ns until the
    /// breaker half-opens (1 s while half-open: the trials in flight decide soon).
    case refuse(retryAfter: UInt64)
}

/// How an admitted request ended, as far as the breaker is concerned.
public enum CallResult: Sendable, Equatable {
    /// The upstream answered with a status that is not a failure status, after `duration` ns (slow calls count).
    case success(duration: UInt64)
    /// A failure status, a connect error, a reset or a timeout (the gateway's `timeouts`; the breaker sets none).
    case failure
    /// No verdict about the upstream: the client went away, or the request was refused later in the chain. Counts
    /// nothing, but gives a half-open trial slot back.
    case cancelled
}

/// What `GET /breakers` shows of a breaker.
public struct BreakerSnapshot: Sendable, Equatable {
    public var state: BreakerState
    /// Results in the rolling window (closed state; zero otherwise: the window restarts on closing).
    public var requests: Int
    public var failures: Int
    public var slow: Int
    /// Times the breaker has opened since creation (re-opening from half-open included).
    public var trips: Int
    /// ns until it half-opens, when open.
    public var nextHalfOpenIn: UInt64?
    /// The current (or next) open interval, ns: doubles on consecutive trips.
    public var openInterval: UInt64
    /// Trial requests admitted and succeeded in this half-open period.
    public var trialsAdmitted: Int
    public var trialsSucceeded: Int
}
