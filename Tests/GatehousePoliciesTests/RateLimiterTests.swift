import Dispatch
import Synchronization
import Testing

@testable import GatehousePolicies

private let second: UInt64 = 1_000_000_000
private let minute = 60 * second
private let hour = 60 * minute

@Suite struct RateLimiterTests {
    func rule(_ rate: Int, per unit: UInt64, burst: Int, maxDelay: UInt64 = 0) -> RateLimitRule {
        RateLimitRule(name: "per-client", rate: rate, per: unit, burst: burst, maxDelay: maxDelay)
    }

    @Test func emissionIntervalIsUnitOverRateRoundedUp() {
        #expect(rule(100, per: second, burst: 20).emissionInterval == 10_000_000)
        #expect(rule(3, per: second, burst: 1).emissionInterval == 333_333_334)
        #expect(rule(7, per: hour, burst: 1).emissionInterval == 514_285_714_286)
        #expect(rule(100, per: second, burst: 20).fillTime == 200_000_000)
    }

    @Test func aFreshKeyGetsItsBurstAtOnceThenIsRefused() {
        let limiter = RateLimiter(rule: rule(100, per: second, burst: 20))
        let start: UInt64 = 5 * second
        for used in 1...20 {
            // remaining counts down to 0; the bucket is full again `used × T` later.
            #expect(limiter.decide("a", now: start) == .allow(remaining: 20 - used, resetAfter: UInt64(used) * 10_000_000))
        }
        #expect(limiter.decide("a", now: start) == .refuse(retryAfter: 10_000_000, resetAfter: 200_000_000))
        #expect(limiter.decide("b", now: start) == .allow(remaining: 19, resetAfter: 10_000_000))  // keys are independent
        #expect(limiter.stats() == RateLimitStats(trackedKeys: 2, allowed: 21, limited: 1, delayed: 0))
    }

    @Test func anEmissionIntervalLaterExactlyOneMoreIsAllowed() {
        let limiter = RateLimiter(rule: rule(100, per: second, burst: 5))
        for _ in 0..<5 { _ = limiter.decide("k", now: 0) }
        // One ns before the emission boundary: refused, and told exactly how long to wait.
        #expect(limiter.decide("k", now: 10_000_000 - 1) == .refuse(retryAfter: 1, resetAfter: 50_000_000 - 10_000_000 + 1))
        #expect(limiter.decide("k", now: 10_000_000) == .allow(remaining: 0, resetAfter: 50_000_000))
        #expect(limiter.decide("k", now: 10_000_000) == .refuse(retryAfter: 10_000_000, resetAfter: 50_000_000))
        // Refusals do not move the TAT: retrying precisely at retryAfter succeeds.
        for _ in 0..<100 { _ = limiter.decide("k", now: 15_000_000) }
        #expect(limiter.decide("k", now: 20_000_000) == .allow(remaining: 0, resetAfter: 50_000_000))
        // After the fill time the bucket is whole again.
        #expect(limiter.decide("k", now: 20_000_000 + 50_000_000) == .allow(remaining: 4, resetAfter: 10_000_000))
    }

    @Test func retryAfterIsNeverEarlyForRatesThatDoNotDivideTheUnit() {
        let limiter = RateLimiter(rule: rule(3, per: second, burst: 1))
        #expect(limiter.decide("k", now: 0) == .allow(remaining: 0, resetAfter: 333_333_334))  // 333,333,333.3 ns up
        guard case .refuse(let retryAfter, _) = limiter.decide("k", now: 0) else {
            Issue.record("second request within T must be refused")
            return
        }
        #expect(retryAfter == 333_333_334)
        #expect(limiter.decide("k", now: retryAfter - 1) != .allow(remaining: 0, resetAfter: 333_333_334))
        guard case .allow = limiter.decide("k", now: retryAfter) else {
            Issue.record("allowed at retryAfter")
            return
        }
    }

    @Test func delayShapesUpToMaxDelayThenRefuses() {
        let limiter = RateLimiter(rule: rule(100, per: second, burst: 2, maxDelay: 25_000_000))
        #expect(limiter.decide("k", now: 0) == .allow(remaining: 1, resetAfter: 10_000_000))
        #expect(limiter.decide("k", now: 0) == .allow(remaining: 0, resetAfter: 20_000_000))
        #expect(limiter.decide("k", now: 0) == .delay(10_000_000, remaining: 0, resetAfter: 30_000_000))
        #expect(limiter.decide("k", now: 0) == .delay(20_000_000, remaining: 0, resetAfter: 40_000_000))
        // A 30 ms wait exceeds the 25 ms budget: refused, and nothing was counted.
        #expect(limiter.decide("k", now: 0) == .refuse(retryAfter: 30_000_000, resetAfter: 40_000_000))
        #expect(limiter.decide("k", now: 5_000_000) == .delay(25_000_000, remaining: 0, resetAfter: 45_000_000))
        #expect(limiter.stats() == RateLimitStats(trackedKeys: 1, allowed: 2, limited: 1, delayed: 3))
    }

    /// The allowed times of one key under a greedy client: every `step` ns from `start` for `duration` ns it sends
    /// requests until one is refused (so it asks at least as fast as the limit allows whenever step ≤ T).
    func allowedTimes(_ limiter: RateLimiter, start: UInt64, step: UInt64, duration: UInt64) -> [UInt64] {
        var allowed: [UInt64] = []
        var now = start
        while now <= start + duration {
            asking: while true {
                switch limiter.decide("k", now: now) {
                case .allow, .delay: allowed.append(now)
                case .refuse: break asking
                }
            }
            now += step
        }
        return allowed
    }

    /// The most allowed requests in any closed interval [tᵢ, tᵢ + length] (it suffices to start at an allowed time).
    func mostInAnyInterval(_ times: [UInt64], length: UInt64) -> Int {
        var most = 0
        var end = 0
        for start in times.indices {
            while end < times.count, times[end] - times[start] <= length { end += 1 }
            most = max(most, end - start)
        }
        return most
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var rate: Int
        var unit: UInt64
        var burst: Int
        var step: UInt64
        var duration: UInt64
        var testDescription: String { "\(rate)/\(unit / second)s burst \(burst) every \(step) ns" }
    }

    /// The issue's accuracy contract: over any interval L at most `burst + rate × L`; from the first request of a
    /// client asking faster than the rate, at least `burst + rate × L − 1`. Rates per second, minute and hour,
    /// rates that do not divide the unit, intervals at and around the emission boundaries.
    @Test(arguments: [
        Case(rate: 100, unit: second, burst: 20, step: 1_000_000, duration: 10 * second),
        Case(rate: 100, unit: second, burst: 1, step: 2_500_000, duration: 5 * second),
        Case(rate: 3, unit: second, burst: 4, step: 7_000_000, duration: 60 * second),
        Case(rate: 7, unit: minute, burst: 3, step: 997 * 1_000_000, duration: 2 * hour),
        Case(rate: 5, unit: hour, burst: 2, step: second, duration: 3 * hour),
        Case(rate: 700_000, unit: second, burst: 50, step: 700, duration: 20_000_000),
    ])
    func accuracyBoundsHoldOverIntervals(_ c: Case) {
        let limiter = RateLimiter(rule: rule(c.rate, per: c.unit, burst: c.burst))
        let start: UInt64 = 123_456_789
        let times = allowedTimes(limiter, start: start, step: c.step, duration: c.duration)
        let emission = limiter.rule.emissionInterval
        var lengths: [UInt64] = [0, 1, emission - 1, emission, emission + 1, c.duration / 3, c.duration]
        for k: UInt64 in [2, 10, 37] { lengths += [k * emission - 1, k * emission, k * emission + 1] }
        for length in lengths where length <= c.duration {
            let sustained = Int(UInt128(c.rate) * UInt128(length) / UInt128(c.unit))
            let most = mostInAnyInterval(times, length: length)
            #expect(most <= c.burst + sustained, "L=\(length): \(most) > \(c.burst) + \(sustained)")
            let fromStart = times.prefix { $0 - start <= length }.count
            #expect(fromStart >= c.burst + sustained - 1, "L=\(length): \(fromStart) < \(c.burst) + \(sustained) - 1")
        }
        // The bound is tight, not just respected: the client got essentially all of it.
        let total = c.burst + Int(UInt128(c.rate) * UInt128(c.duration) / UInt128(c.unit))
        #expect(times.count >= total - 1 && times.count <= total)
    }

    @Test func retryAfterSecondsRoundsUpAndIsAtLeastOne() {
        #expect(RateLimiter.retryAfterSeconds(0) == 1)
        #expect(RateLimiter.retryAfterSeconds(1) == 1)
        #expect(RateLimiter.retryAfterSeconds(second) == 1)
        #expect(RateLimiter.retryAfterSeconds(second + 1) == 2)
        #expect(RateLimiter.retryAfterSeconds(2_500_000_000) == 3)
    }

    @Test func headersFollowTheDraftsStructuredFields() {
        let perClient = rule(100, per: second, burst: 20)
        #expect(RateLimitHeaders.policy(perClient) == "\"per-client\";q=20;w=1")
        #expect(RateLimitHeaders.policy(rule(10, per: minute, burst: 10)) == "\"per-client\";q=10;w=60")
        #expect(RateLimitHeaders.policy(rule(1000, per: second, burst: 1)) == "\"per-client\";q=1;w=1")  // ≥ 1
        let refused = RateLimitDecision.refuse(retryAfter: 10_000_000, resetAfter: 200_000_000)
        #expect(RateLimitHeaders.rateLimit(name: "per-client", decision: refused) == "\"per-client\";r=0;t=1")
        let allowed = RateLimitDecision.allow(remaining: 19, resetAfter: 1_500_000_000)
        #expect(RateLimitHeaders.rateLimit(name: "per-client", decision: allowed) == "\"per-client\";r=19;t=2")
        #expect(RateLimitHeaders.quoted("a\"b\\c\u{e9}") == "\"a\\\"b\\\\c?\"")
    }

    @Test func aFloodOfDistinctKeysStaysWithinMaxKeys() {
        let sharded = RateLimiter(rule: rule(10, per: second, burst: 10), maxKeys: 1000)
        for index in 0..<20_000 { _ = sharded.decide("flood-\(index)", now: 0) }
        #expect(sharded.stats().trackedKeys <= 1000)
        #expect(sharded.stats().trackedKeys >= 900)  // the bound is used, not a tiny cache
        // One shard, so that the eviction order is the CLOCK hand's alone (not the hash's spread over shards).
        let limiter = RateLimiter(rule: rule(10, per: second, burst: 10), maxKeys: 1000, shardCount: 1)
        // A hot key, out of quota, used between flood keys: second chance keeps it (and its empty bucket).
        for _ in 0..<10 { _ = limiter.decide("hot", now: 0) }
        for index in 0..<20_000 {
            _ = limiter.decide("flood-\(index)", now: 0)
            guard case .refuse = limiter.decide("hot", now: 0) else {
                Issue.record("the hot key lost its state after \(index) flood keys")
                return
            }
        }
        let stats = limiter.stats()
        #expect(stats.trackedKeys == 1000)
        #expect(stats.evictedLive > 0)  // all flood keys were live: evictions cost accuracy and are counted
    }

    @Test func keysWithAFullBucketAreDroppedAtNoLoss() {
        let limiter = RateLimiter(rule: rule(100, per: second, burst: 20), maxKeys: 1000, shardCount: 1)
        for index in 0..<1000 { _ = limiter.decide("k\(index)", now: 0) }
        let first = limiter.stats()
        #expect(first.trackedKeys == 1000 && first.evictedLive == 0)
        // 10 ms later every bucket holds 20 again (one request each): a new flood reuses their slots and evicts no
        // live key at all.
        for index in 0..<1000 { _ = limiter.decide("n\(index)", now: 10_000_000) }
        let after = limiter.stats()
        #expect(after.trackedKeys == 1000)
        #expect(after.evictedLive == 0)
        #expect(limiter.purge(now: 10_000_000 - 1) == 0)  // nothing is full yet
        #expect(limiter.purge(now: 20_000_000) == after.trackedKeys)
        #expect(limiter.stats().trackedKeys == 0)
    }

    @Test func aShorterIdleExpiryDropsKeysEarlier() {
        let limiter = RateLimiter(rule: rule(1, per: second, burst: 10), idleExpiry: 2 * second)
        for _ in 0..<10 { _ = limiter.decide("k", now: 0) }  // TAT = 10 s, fill time 10 s
        #expect(limiter.purge(now: 2 * second - 1) == 0)
        #expect(limiter.purge(now: 2 * second) == 1)
    }

    /// Several threads hammer one key at the same instant: exactly `burst` pass, never one more.
    @Test func concurrentDecisionsOnOneKeyNeverOvershoot() {
        let limiter = RateLimiter(rule: rule(1000, per: second, burst: 50))
        let allowed = Atomic<Int>(0)
        let rounds: UInt64 = 20
        for round in 0..<rounds {
            // Every round moves the clock by 7 emission intervals: 7 more requests are due, and no more.
            let now = round * 7 * 1_000_000
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                for _ in 0..<2_000 {
                    if case .allow = limiter.decide("shared", now: now) { allowed.add(1, ordering: .relaxed) }
                }
            }
        }
        #expect(allowed.load(ordering: .relaxed) == 50 + Int(rounds - 1) * 7)
        #expect(limiter.stats().allowed == allowed.load(ordering: .relaxed))
        #expect(limiter.stats().limited == 4 * 2_000 * Int(rounds) - allowed.load(ordering: .relaxed))
    }

    /// Threads read a shared fake clock that one of them keeps moving: the upper bound holds across them.
    @Test func concurrentDecisionsWithAMovingClockStayWithinTheBound() {
        let limiter = RateLimiter(rule: rule(1000, per: second, burst: 10))
        let clock = Atomic<UInt64>(0)
        let allowed = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for _ in 0..<20_000 {
                let now = worker == 0 ? clock.add(10_000, ordering: .relaxed).newValue : clock.load(ordering: .relaxed)
                if case .allow = limiter.decide("shared", now: now) { allowed.add(1, ordering: .relaxed) }
            }
        }
        let elapsed = clock.load(ordering: .relaxed)
        #expect(elapsed == 20_000 * 10_000)
        let bound = 10 + Int(elapsed / 1_000_000)
        #expect(allowed.load(ordering: .relaxed) <= bound)
        #expect(allowed.load(ordering: .relaxed) >= bound - 1)  // the clock thread alone asks every 10 µs
    }
}
