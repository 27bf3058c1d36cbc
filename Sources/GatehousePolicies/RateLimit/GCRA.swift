/// The generic cell rate algorithm (GCRA) of one rule: the arithmetic of a decision, without storage. The Redis
/// limiter of the scale-out issue reproduces exactly these formulas.
///
/// Time is counted in *ticks* of 1/`rate` ns, so that the emission interval is exact whatever the rate
/// (`unit / rate` ns is not an integer for 7/h or 700,000/s; rounding it would lose or gain a request every
/// `T² ` ns or so, breaking the accuracy bound below on long intervals):
///
///     now  = now_ns × rate                      (ticks)
///     T    = unit                               (ticks per request: the emission interval)
///     τ    = (burst − 1) × T                    (the tolerance: how far ahead of now the TAT may run)
///     tat  = max(TAT, now)                      (TAT: the key's theoretical arrival time; absent = now)
///     if tat − now ≤ τ:                 allow;           TAT ← tat + T
///     elif tat − now − τ ≤ maxDelay:    delay by tat − now − τ; TAT ← tat + T
///     else:                             refuse, retryAfter = tat − now − τ; TAT unchanged
///     remaining  = ⌊(τ − (TAT' − T − now)) / T⌋, at least 0      (requests that could go right now)
///     resetAfter = TAT' − now                                    (until the bucket is full again)
///
/// Durations are turned back into ns rounding up (a client told to retry after `retryAfter` is never early).
///
/// **Accuracy.** For allowed requests at t₁ ≤ … ≤ tₙ within an interval of length L, TAT before the n-th is at
/// least t₁ + (n − 1)·T, and allowing it needs TAT − tₙ ≤ τ, so n ≤ burst + L/T = burst + rate·L/unit: never more.
/// Conversely a key that asks at least that fast is refused only while TAT − now > τ, and each refusal leaves TAT
/// unchanged, so it gets at least burst + ⌊rate·L/unit⌋ ≥ burst + rate·L/unit − 1. Delayed requests count as
/// allowed at the time they were decided.
struct GCRA: Sendable, Hashable {
    let rate: UInt64
    let emission: UInt128
    let tolerance: UInt128
    let maxDelay: UInt128

    init(rule: RateLimitRule) {
        rate = UInt64(rule.rate)
        emission = UInt128(rule.unit)
        tolerance = UInt128(rule.burst - 1) * UInt128(rule.unit)
        maxDelay = UInt128(rule.maxDelay) * UInt128(rule.rate)
    }

    @inline(__always)
    func ticks(_ nanoseconds: UInt64) -> UInt128 { UInt128(nanoseconds) * UInt128(rate) }

    /// The decision for a key whose stored TAT is `stored` (nil: no state, a full bucket) and the TAT to store
    /// (nil: unchanged).
    @inline(__always)
    func decide(stored: UInt128?, now nanoseconds: UInt64) -> (RateLimitDecision, newTAT: UInt128?) {
        let now = ticks(nanoseconds)
        let tat = max(stored ?? now, now)
        let ahead = tat - now
        if ahead <= tolerance {
            let remaining = Self.quotient(tolerance - ahead, emission)
            return (.allow(remaining: remaining, resetAfter: nanos(ahead + emission)), tat + emission)
        }
        let wait = ahead - tolerance
        if wait <= maxDelay {
            return (.delay(nanos(wait), remaining: 0, resetAfter: nanos(ahead + emission)), tat + emission)
        }
        return (.refuse(retryAfter: nanos(wait), resetAfter: nanos(ahead)), nil)
    }

    /// Ticks to ns, rounded up. The values met here (at most a bucket's fill time plus the delay) fit 64 bits, so the
    /// common path is one 64-bit division rather than a 128-bit one.
    @inline(__always)
    func nanos(_ ticks: UInt128) -> UInt64 {
        if ticks <= UInt128(UInt64.max - rate) {
            let small = UInt64(truncatingIfNeeded: ticks)
            return (small + rate - 1) / rate
        }
        return UInt64(clamping: (ticks + UInt128(rate) - 1) / UInt128(rate))
    }

    @inline(__always)
    static func quotient(_ numerator: UInt128, _ denominator: UInt128) -> Int {
        if numerator <= UInt128(UInt64.max), denominator <= UInt128(UInt64.max) {
            return Int(clamping: UInt64(truncatingIfNeeded: numerator) / UInt64(truncatingIfNeeded: denominator))
        }
        return Int(clamping: numerator / denominator)
    }
}
