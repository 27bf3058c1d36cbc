import NIOCore
import NIOEmbedded
import Testing

@testable import GatehouseGateway

@Suite struct UpstreamPolicyTests {
    let settings = HealthCheckSettings(path: "/healthz", interval: .seconds(5), timeout: .seconds(1), healthyThreshold: 2, unhealthyThreshold: 3)

    @Test func healthStreakNeedsThresholdsBothWays() {
        var streak = HealthStreak()
        #expect(streak.record(healthy: false, isDown: false, settings: settings) == nil)
        #expect(streak.record(healthy: false, isDown: false, settings: settings) == nil)
        #expect(streak.record(healthy: false, isDown: false, settings: settings) == false)  // third failure: down
        #expect(streak.record(healthy: true, isDown: true, settings: settings) == nil)
        #expect(streak.record(healthy: false, isDown: true, settings: settings) == nil)  // a failure resets the successes
        #expect(streak.record(healthy: true, isDown: true, settings: settings) == nil)
        #expect(streak.record(healthy: true, isDown: true, settings: settings) == true)  // two in a row: up again
    }

    @Test func outlierEjectionAfterConsecutiveFailuresAndReturn() {
        let health = TargetHealth(consecutiveFailuresToEject: 3, ejectionTime: .seconds(30))
        let target = TargetKey(host: "127.0.0.1", port: 1)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        health.recordFailure(target, now: start)
        health.recordFailure(target, now: start)
        health.recordSuccess(target)  // a success in between resets the count
        health.recordFailure(target, now: start)
        health.recordFailure(target, now: start)
        #expect(health.isAvailable(target, now: start))
        health.recordFailure(target, now: start)
        #expect(!health.isAvailable(target, now: start + .seconds(29)))
        #expect(health.isAvailable(target, now: start + .seconds(30)))
    }

    @Test func zeroConsecutiveFailuresDisablesEjection() {
        let health = TargetHealth(consecutiveFailuresToEject: 0, ejectionTime: .seconds(30))
        let target = TargetKey(host: "127.0.0.1", port: 1)
        for _ in 0..<10 { health.recordFailure(target, now: .now()) }
        #expect(health.isAvailable(target, now: .now()))
    }

    func cluster(_ balancing: CompiledCluster.LoadBalancing, targets: Int, health: TargetHealth? = nil) -> CompiledCluster {
        CompiledCluster(
            name: "c", targets: (0..<targets).map { TargetKey(host: "127.0.0.1", port: 1000 + $0) }, loadBalancing: balancing,
            poolLimits: .init(maxConnections: 10, maxIdle: 10, idleTimeout: .seconds(1), connectTimeout: .seconds(1)), retryAttempts: 1,
            health: health ?? TargetHealth(consecutiveFailuresToEject: 5, ejectionTime: .seconds(30)), healthCheck: nil
        )
    }

    @Test func roundRobinSpreadsEvenlyAndSkipsUnavailableTargets() {
        let loop = EmbeddedEventLoop()
        let state = LoopState(eventLoop: loop)
        let health = TargetHealth(consecutiveFailuresToEject: 5, ejectionTime: .seconds(30))
        let cluster = cluster(.roundRobin, targets: 3, health: health)
        var counts: [Int: Int] = [:]
        for _ in 0..<30 { counts[state.pickTarget(cluster, now: .now())!.port, default: 0] += 1 }
        #expect(counts == [1000: 10, 1001: 10, 1002: 10])
        health.setDown(TargetKey(host: "127.0.0.1", port: 1001), true)
        counts = [:]
        for _ in 0..<30 { counts[state.pickTarget(cluster, now: .now())!.port, default: 0] += 1 }
        #expect(counts[1001] == nil)
        #expect(counts[1000] == 15 && counts[1002] == 15)
        // Excluding the only other healthy target leaves one choice.
        #expect(state.pickTarget(cluster, excluding: TargetKey(host: "127.0.0.1", port: 1000), now: .now())?.port == 1002)
        for port in [1000, 1002] { health.setDown(TargetKey(host: "127.0.0.1", port: port), true) }
        #expect(state.pickTarget(cluster, now: .now()) == nil)
    }

    @Test func leastRequestPrefersTheLessLoadedTarget() {
        let loop = EmbeddedEventLoop()
        let state = LoopState(eventLoop: loop)
        let cluster = cluster(.leastRequest, targets: 2)
        let busy = TargetKey(host: "127.0.0.1", port: 1000)
        for _ in 0..<5 { state.started(busy) }
        // With two targets, power of two choices always compares both: the idle one wins every time.
        for _ in 0..<20 { #expect(state.pickTarget(cluster, now: .now())?.port == 1001) }
        for _ in 0..<5 { state.finished(busy) }
        var seen = Set<Int>()
        for _ in 0..<50 {
            let target = state.pickTarget(cluster, now: .now())!
            seen.insert(target.port)
            state.started(target)
        }
        #expect(seen == [1000, 1001])
    }
}
