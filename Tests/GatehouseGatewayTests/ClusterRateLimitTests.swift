import GatehouseConfiguration
import GatehousePolicies
import GatehouseRedis
import NIOCore
import NIOPosix
import Testing

@testable import GatehouseGateway

/// A `scope: cluster` limit's own logic: Redis's answer mapped to the local limiter's decision (the same headers),
/// and the fallback when Redis cannot be reached (a loopback port nobody listens on: refused at once).
@Suite struct ClusterRateLimitTests {
    static func definition(instances: Int) -> GatewayConfiguration.RateLimit {
        var limit = GatewayConfiguration.RateLimit(name: "cluster", key: [.route], rate: 100, perSeconds: 1, burst: 10)
        limit.scope = .cluster
        limit.clusterInstances = instances
        return limit
    }

    @Test func redisDecisionsMapToTheLocalDecisionsInNanoseconds() {
        #expect(ClusterRateLimit.decision(.init(outcome: .allow, remaining: 7, resetAfterMicros: 30_000, nowMicros: 1)) == .allow(remaining: 7, resetAfter: 30_000_000))
        #expect(
            ClusterRateLimit.decision(.init(outcome: .delay(micros: 5_000), remaining: 0, resetAfterMicros: 110_000, nowMicros: 1))
                == .delay(5_000_000, remaining: 0, resetAfter: 110_000_000)
        )
        #expect(
            ClusterRateLimit.decision(.init(outcome: .refuse(retryAfterMicros: 10_000), remaining: 0, resetAfterMicros: 100_000, nowMicros: 1))
                == .refuse(retryAfter: 10_000_000, resetAfter: 100_000_000)
        )
    }

    @Test func theScriptGetsTheLimitsParametersInMicroseconds() {
        let client = RedisClient(configuration: RedisConfiguration(), eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        let definition = Self.definition(instances: 4)
        let limit = ClusterRateLimit(route: "api", definition: definition, rule: CompiledRateLimit.rule(definition), redis: client, logger: .init(label: "test"))
        #expect(limit.emissionIntervalMicros == 10_000 && limit.burst == 10 && limit.maxDelayMicros == 0)
        #expect(limit.keyPrefix == "gatehouse:rl:api:cluster:")
        // The call is encoded once with these parameters; a decision writes only its key.
        #expect(limit.call == GCRACall(keyPrefix: "gatehouse:rl:api:cluster:", emissionIntervalMicros: 10_000, burst: 10, maxDelayMicros: 0))
        // This gateway's share while falling back: 100 per 4 s, burst 10 / 4 = 2.
        #expect(limit.fallbackLimiter.rule.rate == 100 && limit.fallbackLimiter.rule.unit == 4_000_000_000 && limit.fallbackLimiter.rule.burst == 2)
    }

    @Test func anUnreachableRedisFallsBackToTheLocalShareNeitherOpenNorFailing() throws {
        // A bound socket that never listens: connecting to its port is refused, and nobody else can take it.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let dead = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = dead.localAddress!.port!
        try dead.close().wait()
        let client = RedisClient(configuration: RedisConfiguration(port: port, commandTimeout: .milliseconds(50), connectTimeout: .milliseconds(100)), eventLoopGroup: group)
        client.start()
        defer { _ = try? client.shutdown().wait() }
        let definition = Self.definition(instances: 2)
        let limit = ClusterRateLimit(route: "api", definition: definition, rule: CompiledRateLimit.rule(definition), redis: client, logger: .init(label: "test"))
        let loop = group.next()
        #expect(!limit.isFallingBack)

        // The first decision asks Redis, fails, and is answered locally.
        let first: RateLimitDecision
        switch limit.decide("k", now: NIODeadline.now().uptimeNanoseconds, on: loop) {
        case .now: Issue.record("the first decision should ask Redis"); return
        case .later(let future): first = try future.wait()
        }
        #expect(first == .allow(remaining: 4, resetAfter: 20_000_000), "burst 10 / 2 = 5, 50/s")
        #expect(limit.isFallingBack && limit.snapshot.fallbacks == 1)
        // Later decisions are local at once (no request waits on Redis), at this gateway's share: 5 at once.
        // (Another key: the first was decided at the time Redis failed, which the test does not know.)
        var allowed = 0
        for _ in 0..<10 {
            guard case .now(let decision) = limit.decide("other", now: 5_000_000_000, on: loop) else { Issue.record("should be local"); return }
            if case .allow = decision { allowed += 1 }
        }
        #expect(allowed == 5)
        #expect(limit.fallbackLimiter.stats().limited == 5)
    }
}

/// What a reload keeps: a cluster limit with its Redis client while the `redis:` section is unchanged, a local
/// limit whatever happens to `redis:`.
@Suite struct ClusterRateLimitReloadTests {
    static func yaml(redisPort: Int) -> String {
        """
        listeners: [{port: 8080}]
        redis: {url: 'redis://127.0.0.1:\(redisPort)'}
        clusters: [{name: one, targets: ['http://127.0.0.1:9001']}]
        routes:
          - name: api
            match: {path_prefix: /}
            cluster: one
            rate_limits: [{name: shared, key: ip, rate: 10/s, scope: cluster, cluster_instances: 2}, {name: own, key: ip, rate: 5/s}]
        """
    }

    @Test func aReloadKeepsLimitsUnlessTheirDefinitionOrRedisChanged() throws {
        let compiler = GatewayCompiler()
        let first = compiler.compile(try GatewayConfiguration.parse(yaml: Self.yaml(redisPort: 1)))
        let again = compiler.compile(try GatewayConfiguration.parse(yaml: Self.yaml(redisPort: 1)))
        let moved = compiler.compile(try GatewayConfiguration.parse(yaml: Self.yaml(redisPort: 2)))
        let limits = [first, again, moved].map { $0.routeList[0].rateLimits!.limits }
        #expect(limits[0][0].cluster != nil && limits[0][1].cluster == nil)
        #expect(limits[1][0] === limits[0][0] && limits[1][1] === limits[0][1])
        // Another Redis: the cluster limit is rebuilt on the new client, the local one keeps its counts.
        #expect(limits[2][0] !== limits[0][0] && limits[2][0].cluster?.redis.configuration.port == 2)
        #expect(limits[2][1] === limits[0][1])
    }
}
