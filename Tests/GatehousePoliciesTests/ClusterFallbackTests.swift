import Testing

@testable import GatehousePolicies

private let second: UInt64 = 1_000_000_000
private let millisecond: UInt64 = 1_000_000

/// The cluster limit's Redis / local switch, on an injected clock (no wall time, no I/O).
@Suite struct ClusterFallbackTests {
    @Test func decisionsGoToRedisUntilItFails() {
        var state = ClusterFallback(probeInterval: second)
        #expect(state.route(now: 0) == .redis)
        #expect(state.redisAnswered(now: 1) == nil)  // an answer in redis mode changes nothing
        #expect(state.route(now: 2) == .redis)
        #expect(state.mode == .redis && state.fallbacks == 0)
    }

    @Test func aFailureFallsBackOnceAndLaterFailuresAreNotNewTransitions() {
        var state = ClusterFallback(probeInterval: second)
        #expect(state.redisFailed(now: 10 * millisecond) == .fellBack)
        // Other requests in flight when Redis went away fail too: still one transition (one log line).
        #expect(state.redisFailed(now: 11 * millisecond) == nil)
        #expect(state.redisFailed(now: 12 * millisecond) == nil)
        #expect(state.mode == .fallback && state.fallbacks == 1)
        #expect(state.route(now: 20 * millisecond) == .local)
    }

    @Test func whileFallingBackOneProbePerIntervalAndNoRequestWaitsOnRedis() {
        var state = ClusterFallback(probeInterval: second)
        _ = state.redisFailed(now: 0)
        var probes = 0
        // 10 s of requests every 10 ms: every one is decided locally, and at most one probe per second goes out.
        var now: UInt64 = 0
        while now < 10 * second {
            let route = state.route(now: now)
            #expect(route != .redis)
            if route == .localAndProbe {
                probes += 1
                #expect(state.redisFailed(now: now + 50 * millisecond, probe: true) == nil)  // the probe timed out
            }
            now += 10 * millisecond
        }
        #expect(probes == 9, "probes at 1 s, 2 s, … 9 s")
        #expect(state.mode == .fallback)
    }

    @Test func aProbeInFlightIsNotDoubled() {
        var state = ClusterFallback(probeInterval: second)
        _ = state.redisFailed(now: 0)
        #expect(state.route(now: second) == .localAndProbe)
        // The probe has not answered yet, and its interval has passed again: still no second probe.
        #expect(state.route(now: 3 * second) == .local)
        #expect(state.redisFailed(now: 3 * second, probe: true) == nil)
        #expect(state.route(now: 4 * second) == .localAndProbe)
    }

    @Test func onlyAnAnsweredProbeBringsRedisBack() {
        var state = ClusterFallback(probeInterval: second)
        _ = state.redisFailed(now: 0)
        // A decision sent before the outage and answered late says nothing about now.
        #expect(state.redisAnswered(now: 5 * millisecond) == nil)
        #expect(state.mode == .fallback)
        #expect(state.route(now: second) == .localAndProbe)
        #expect(state.redisAnswered(now: second + millisecond, probe: true) == .recovered)
        #expect(state.mode == .redis)
        #expect(state.route(now: second + 2 * millisecond) == .redis)
        // And a second outage is a second transition.
        #expect(state.redisFailed(now: 2 * second) == .fellBack)
        #expect(state.fallbacks == 2)
    }

    @Test func theShareIsRateAndBurstOverInstancesExactly() {
        let rule = RateLimitRule(name: "cluster", rate: 100, per: second, burst: 100, maxDelay: 0)
        let half = rule.share(of: 2)
        #expect(half.rate == 100 && half.unit == 2 * second && half.burst == 50)
        #expect(half.emissionInterval == 20 * millisecond)  // 50/s
        let third = rule.share(of: 3)
        #expect(third.burst == 33 && third.unit == 3 * second)  // 100 per 3 s, not 33/s
        #expect(RateLimitRule(name: "x", rate: 5, per: second, burst: 1, maxDelay: 0).share(of: 4).burst == 1)
        #expect(rule.share(of: 1) == rule)
    }

    @Test func theFallbackLimiterHoldsTheShareOverTime() {
        // Two gateways falling back, each hammered for 10 s: each admits at most its burst/2 + rate/2 × 10.
        let limiter = RateLimiter(rule: RateLimitRule(name: "cluster", rate: 100, per: second, burst: 100, maxDelay: 0).share(of: 2))
        var allowed = 0
        var now: UInt64 = 0
        while now < 10 * second {
            if case .allow = limiter.decide("k", now: now) { allowed += 1 }
            now += millisecond
        }
        #expect(allowed >= 50 + 500 - 1 && allowed <= 50 + 500)
    }
}
