import Dispatch
import Synchronization
import Testing

@testable import GatehousePolicies

private let second: UInt64 = 1_000_000_000
private let millisecond: UInt64 = 1_000_000

@Suite struct CircuitBreakerTests {
    /// Admits one request and records its result at the same instant; returns the admission.
    @discardableResult
    func call(_ breaker: inout CircuitBreaker, _ result: CallResult, now: UInt64) -> BreakerAdmission {
        let admission = breaker.admit(now: now)
        switch admission {
        case .allow(let ticket), .allowTrial(let ticket): breaker.record(result, ticket: ticket, now: now)
        case .refuse: break
        }
        return admission
    }

    func ticket(_ admission: BreakerAdmission) -> BreakerTicket? {
        switch admission {
        case .allow(let ticket), .allowTrial(let ticket): ticket
        case .refuse: nil
        }
    }

    func isTrial(_ admission: BreakerAdmission) -> Bool {
        if case .allowTrial = admission { return true }
        return false
    }

    func trip(_ breaker: inout CircuitBreaker, now: UInt64) {
        for _ in 0..<breaker.settings.minRequests { call(&breaker, .failure, now: now) }
        #expect(breaker.state == .open)
    }

    @Test func defaultsAreHystrixs() {
        let settings = CircuitBreakerSettings()
        #expect(settings.window == 10 * second && settings.buckets == 10 && settings.minRequests == 20)
        #expect(settings.errorRate == 0.5 && settings.slowCall == nil)
        #expect(settings.openFor == 5 * second && settings.maxOpenFor == 60 * second && settings.halfOpenRequests == 3)
    }

    @Test func noDecisionBelowTheMinimumVolume() {
        var breaker = CircuitBreaker(settings: .init())
        for _ in 0..<19 { call(&breaker, .failure, now: second) }
        #expect(breaker.state == .closed)  // 19 failures out of 19: still too few to judge
        call(&breaker, .failure, now: second)
        #expect(breaker.state == .open)
        #expect(breaker.trips == 1)
    }

    @Test func opensAtTheErrorRateNotBelow() {
        var below = CircuitBreaker(settings: .init())
        for index in 0..<20 { call(&below, index < 11 ? .success(duration: 1) : .failure, now: second) }
        #expect(below.state == .closed)  // 9/20 = 45%
        #expect(below.snapshot(now: second).failures == 9)

        var at = CircuitBreaker(settings: .init())
        for index in 0..<20 { call(&at, index < 10 ? .success(duration: 1) : .failure, now: second) }
        #expect(at.state == .open)  // 10/20 = 50%: at the rate opens
    }

    @Test func resultsAgeOutOfTheWindowBucketByBucket() {
        var breaker = CircuitBreaker(settings: .init())  // 10 buckets of 1 s
        for bucket: UInt64 in 0..<10 { call(&breaker, .success(duration: 1), now: bucket * second + 500 * millisecond) }
        #expect(breaker.snapshot(now: 10 * second - 1).requests == 10)
        #expect(breaker.snapshot(now: 10 * second).requests == 9)  // bucket [0 s, 1 s) left whole
        #expect(breaker.snapshot(now: 11 * second - 1).requests == 9)
        #expect(breaker.snapshot(now: 11 * second).requests == 8)
        #expect(breaker.snapshot(now: 19 * second - 1).requests == 1)  // only bucket [9 s, 10 s) is left
        #expect(breaker.snapshot(now: 19 * second).requests == 0)
    }

    @Test func failuresThatLeftTheWindowDoNotCount() {
        var early = CircuitBreaker(settings: .init())
        for _ in 0..<19 { call(&early, .failure, now: 0) }
        call(&early, .failure, now: 10 * second)  // the first 19 are in bucket 0, which has just left
        #expect(early.state == .closed)
        #expect(early.snapshot(now: 10 * second).requests == 1)

        var inTime = CircuitBreaker(settings: .init())
        for _ in 0..<19 { call(&inTime, .failure, now: 0) }
        call(&inTime, .failure, now: 10 * second - 1)  // last instant of the window that still holds bucket 0
        #expect(inTime.state == .open)
    }

    @Test func slowCallsOpenAtTheirRate() {
        let settings = CircuitBreakerSettings(slowCall: .init(duration: 2 * second, rate: 0.8))
        var below = CircuitBreaker(settings: settings)
        for index in 0..<20 { call(&below, .success(duration: index < 15 ? 2 * second : 2 * second - 1), now: 0) }
        #expect(below.state == .closed)  // 15/20 = 75%, and 2 s − 1 ns is not slow
        #expect(below.snapshot(now: 0).slow == 15)

        var at = CircuitBreaker(settings: settings)
        for index in 0..<20 { call(&at, .success(duration: index < 16 ? 2 * second : 1), now: 0) }
        #expect(at.state == .open)  // 16/20 = 80%
    }

    @Test func openRefusesUntilItsIntervalThenHalfOpens() {
        var breaker = CircuitBreaker(settings: .init())
        trip(&breaker, now: 100 * second)
        let result1 = breaker.admit(now: 100 * second)
        #expect(result1 == .refuse(retryAfter: 5 * second))
        let result2 = breaker.admit(now: 105 * second - 1)
        #expect(result2 == .refuse(retryAfter: 1))
        #expect(breaker.snapshot(now: 103 * second).nextHalfOpenIn == 2 * second)
        #expect(breaker.snapshot(now: 103 * second).state == .open)
        #expect(breaker.snapshot(now: 105 * second).state == .halfOpen)
        let result3 = breaker.admit(now: 105 * second)
        #expect(isTrial(result3))
        #expect(breaker.state == .halfOpen)
    }

    @Test func halfOpenAdmitsExactlyItsTrialsAndClosesWhenAllSucceed() {
        var breaker = CircuitBreaker(settings: .init())
        trip(&breaker, now: 0)
        let trials = (0..<3).map { _ in breaker.admit(now: 5 * second) }
        #expect(trials.allSatisfy(isTrial))
        let result4 = breaker.admit(now: 5 * second)
        #expect(result4 == .refuse(retryAfter: second))  // the fourth is answered as open
        breaker.record(.success(duration: 1), ticket: ticket(trials[0])!, now: 5 * second)
        breaker.record(.success(duration: 1), ticket: ticket(trials[1])!, now: 5 * second)
        #expect(breaker.state == .halfOpen)
        #expect(breaker.snapshot(now: 5 * second).trialsSucceeded == 2)
        breaker.record(.success(duration: 1), ticket: ticket(trials[2])!, now: 6 * second)
        #expect(breaker.state == .closed)
        #expect(breaker.snapshot(now: 6 * second).requests == 0)  // the window starts afresh
        guard case .allow = breaker.admit(now: 6 * second) else {
            Issue.record("closed admits")
            return
        }
    }

    @Test func aFailedTrialReopensWithTheIntervalDoubledUpToTheCap() {
        var breaker = CircuitBreaker(settings: .init())
        var now: UInt64 = 0
        trip(&breaker, now: now)
        var expected: [UInt64] = []
        var seen: [UInt64] = []
        for interval: UInt64 in [5, 10, 20, 40, 60, 60] {
            expected.append(interval * second)
            guard case .refuse(let retryAfter) = breaker.admit(now: now) else {
                Issue.record("open refuses")
                return
            }
            seen.append(retryAfter)
            now += retryAfter
            let trial = breaker.admit(now: now)
            #expect(isTrial(trial))
            breaker.record(.failure, ticket: ticket(trial)!, now: now)
            #expect(breaker.state == .open)
        }
        #expect(seen == expected)
        #expect(breaker.trips == 7)
        // A close resets the doubling: the next trip opens for openFor again.
        now += 60 * second
        for _ in 0..<3 { call(&breaker, .success(duration: 1), now: now) }
        #expect(breaker.state == .closed)
        trip(&breaker, now: now)
        let result5 = breaker.admit(now: now)
        #expect(result5 == .refuse(retryAfter: 5 * second))
    }

    @Test func aSlowTrialCountsAsFailed() {
        var breaker = CircuitBreaker(settings: .init(slowCall: .init(duration: second, rate: 0.9)))
        trip(&breaker, now: 0)
        let trial = breaker.admit(now: 5 * second)
        breaker.record(.success(duration: second), ticket: ticket(trial)!, now: 6 * second)
        #expect(breaker.state == .open)
        #expect(breaker.snapshot(now: 6 * second).nextHalfOpenIn == 10 * second)
    }

    @Test func aCancelledTrialGivesItsSlotBack() {
        var breaker = CircuitBreaker(settings: .init(halfOpenRequests: 1))
        trip(&breaker, now: 0)
        let trial = breaker.admit(now: 5 * second)
        let result6 = breaker.admit(now: 5 * second)
        #expect(result6 == .refuse(retryAfter: second))
        breaker.record(.cancelled, ticket: ticket(trial)!, now: 5 * second)
        #expect(breaker.state == .halfOpen)
        let again = breaker.admit(now: 5 * second)
        #expect(isTrial(again))
        breaker.record(.success(duration: 1), ticket: ticket(again)!, now: 5 * second)
        #expect(breaker.state == .closed)
    }

    /// Requests admitted while closed that finish after the breaker opened, or while it is half-open, are not trials
    /// and must not decide anything.
    @Test func resultsFromAnEarlierStateAreIgnored() {
        var breaker = CircuitBreaker(settings: .init())
        let slowSuccesses = (0..<3).map { _ in ticket(breaker.admit(now: 0))! }
        let slowFailure = ticket(breaker.admit(now: 0))!
        trip(&breaker, now: 0)
        breaker.record(.success(duration: 1), ticket: slowSuccesses[0], now: second)  // finishes while open
        #expect(breaker.state == .open)
        let trials = (0..<3).map { _ in breaker.admit(now: 5 * second) }
        #expect(trials.allSatisfy(isTrial))
        // While half-open: stale successes do not count as trials, a stale failure does not re-open.
        breaker.record(.success(duration: 1), ticket: slowSuccesses[1], now: 5 * second)
        breaker.record(.success(duration: 1), ticket: slowSuccesses[2], now: 5 * second)
        breaker.record(.failure, ticket: slowFailure, now: 5 * second)
        #expect(breaker.state == .halfOpen)
        #expect(breaker.snapshot(now: 5 * second).trialsSucceeded == 0)
        #expect(breaker.staleResults == 4)
        // A trial of this half-open period that fails re-opens; its siblings finishing later are stale too.
        breaker.record(.failure, ticket: ticket(trials[0])!, now: 5 * second)
        #expect(breaker.state == .open)
        let next = breaker.admit(now: 15 * second)  // the next half-open period
        breaker.record(.success(duration: 1), ticket: ticket(trials[1])!, now: 15 * second)
        breaker.record(.success(duration: 1), ticket: ticket(trials[2])!, now: 15 * second)
        #expect(breaker.snapshot(now: 15 * second).trialsSucceeded == 0)
        #expect(breaker.snapshot(now: 15 * second).trialsAdmitted == 1)
        breaker.record(.success(duration: 1), ticket: ticket(next)!, now: 15 * second)
        #expect(breaker.snapshot(now: 15 * second).trialsSucceeded == 1)
    }

    @Test func theSharedBreakerFollowsTheSameRules() {
        let shared = SharedCircuitBreaker(settings: .init(halfOpenRequests: 2))
        guard case .allow(let first) = shared.admit(now: 0) else {
            Issue.record("closed admits")
            return
        }
        for _ in 0..<20 {
            guard case .allow(let ticket) = shared.admit(now: 0) else { continue }
            shared.record(.failure, ticket: ticket, now: 0)
        }
        #expect(shared.snapshot(now: 0).state == .open)
        #expect(shared.admit(now: second) == .refuse(retryAfter: 4 * second))
        shared.record(.success(duration: 1), ticket: first, now: second)  // stale: dropped without the lock
        // Half-open from four threads at once: exactly two trials.
        let trials = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<1000 {
                if case .allowTrial = shared.admit(now: 5 * second) { trials.add(1, ordering: .relaxed) }
            }
        }
        #expect(trials.load(ordering: .relaxed) == 2)
        #expect(shared.snapshot(now: 5 * second).trialsAdmitted == 2)
    }
}
