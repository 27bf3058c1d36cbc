/// One rate limit: `rate` requests per `unit`, a bucket of `burst`, and how long a request may be held instead of
/// refused. A pure description; `RateLimiter` keeps the per-key state.
public struct RateLimitRule: Sendable, Hashable {
    /// The limit's name: it appears in `RateLimit` / `RateLimit-Policy` and in `GET /rate-limits`.
    public var name: String
    /// Requests per `unit` (≥ 1).
    public var rate: Int
    /// The unit of `rate`, in nanoseconds (1 s, 1 min or 1 h from the configuration's `N/s`, `N/m`, `N/h`).
    public var unit: UInt64
    /// The bucket size (≥ 1): how many requests may arrive at once after a quiet period. The configuration's default
    /// is one unit's worth of rate.
    public var burst: Int
    /// The longest a request may be held before it is forwarded (shaping), in nanoseconds; 0 = refuse instead.
    public var maxDelay: UInt64

    /// - Parameters:
    ///   - rate: requests per `unitNanoseconds`; values below 1 are taken as 1.
    ///   - unitNanoseconds: the unit of `rate` (at least 1 ns).
    ///   - burst: the bucket size; values below 1 are taken as 1.
    ///   - maxDelay: 0 refuses a request over the limit; more holds it up to that long.
    public init(name: String, rate: Int, per unitNanoseconds: UInt64, burst: Int, maxDelay: UInt64) {
        self.name = name
        self.rate = max(1, rate)
        self.unit = max(1, unitNanoseconds)
        self.burst = max(1, burst)
        self.maxDelay = maxDelay
    }

    /// Nanoseconds between two requests at the sustained rate, `unit / rate` rounded up. Informational: the limiter
    /// itself counts in exact ticks of 1/`rate` ns (see `RateLimiter`), so a rate that does not divide the unit
    /// (7/h, 700,000/s) neither gains nor loses requests over long intervals.
    public var emissionInterval: UInt64 { (unit + UInt64(rate) - 1) / UInt64(rate) }

    /// Nanoseconds an empty bucket takes to fill up again: `burst × unit / rate`, rounded up. The default idle expiry
    /// of a key: a key not seen for that long has a full bucket, which is the same as no entry.
    public var fillTime: UInt64 {
        let ticks = UInt128(burst) * UInt128(unit)
        return UInt64(clamping: (ticks + UInt128(rate) - 1) / UInt128(rate))
    }
}

/// What the limiter says about one request.
public enum RateLimitDecision: Sendable, Equatable {
    /// Forward it. `remaining`: how many more could go right now; `resetAfter`: ns until the bucket is full again.
    case allow(remaining: Int, resetAfter: UInt64)
    /// Hold it this many ns, then forward it (shaping; the request has been counted).
    case delay(UInt64, remaining: Int, resetAfter: UInt64)
    /// Over the limit: `retryAfter` is the ns until one request would be allowed; nothing was counted.
    case refuse(retryAfter: UInt64, resetAfter: UInt64)
}

/// Counters of one limiter since it was created (for `GET /rate-limits`).
public struct RateLimitStats: Sendable, Equatable {
    /// Keys with state right now (at most `maxKeys`; an expired key may linger until its slot is needed or `purge`).
    public var trackedKeys: Int
    /// Requests allowed without delay.
    public var allowed: Int
    /// Requests refused.
    public var limited: Int
    /// Requests allowed after a delay.
    public var delayed: Int
    /// Keys dropped while their bucket was not yet full (the LRU bound at work: such a key starts with a fresh
    /// bucket next time, so this counts possible over-admission).
    public var evictedLive: Int

    public init(trackedKeys: Int = 0, allowed: Int = 0, limited: Int = 0, delayed: Int = 0, evictedLive: Int = 0) {
        self.trackedKeys = trackedKeys
        self.allowed = allowed
        self.limited = limited
        self.delayed = delayed
        self.evictedLive = evictedLive
    }
}
