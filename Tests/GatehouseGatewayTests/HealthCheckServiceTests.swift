import GatehouseConfiguration
import Logging
import Testing

@testable import GatehouseGateway

/// The active health checker's scheduling and bookkeeping, with a probe the test controls (no network).
@Suite struct HealthCheckServiceTests {
    static let shared = TargetKey(host: "127.0.0.1", port: 9)

    static func runtime(_ clusters: String) throws -> GatewayRuntime {
        let configuration = try GatewayConfiguration.parse(yaml: """
            listeners: [{port: 8080}]
            clusters:
            \(clusters)
            routes:
              - {match: {path_prefix: /}, cluster: a}
            """)
        return GatewayRuntime(GatewayCompiler().compile(configuration))
    }

    static func cluster(_ runtime: GatewayRuntime, _ name: String) throws -> CompiledCluster {
        try #require(runtime.snapshot.clusters.first { $0.name == name })
    }

    /// Two clusters check one target on different paths: `/a` answers, `/b` does not. Interleaved, each cluster's
    /// results must count towards its own streak only (one streak per target reset B's failures on every A success,
    /// so B never saw two failures in a row).
    @Test func streaksArePerClusterAndTarget() async throws {
        let runtime = try Self.runtime("""
              - {name: a, targets: ['http://127.0.0.1:9'], health_check: {path: /a, unhealthy_threshold: 2, healthy_threshold: 2}}
              - {name: b, targets: ['http://127.0.0.1:9'], health_check: {path: /b, unhealthy_threshold: 2, healthy_threshold: 2}}
            """)
        let service = HealthCheckService(runtime: runtime, logger: Logger(label: "test")) { _, settings in settings.path == "/a" }
        let a = try Self.cluster(runtime, "a"), b = try Self.cluster(runtime, "b")
        for _ in 0..<2 {
            await service.check(Self.shared, cluster: a, settings: try #require(a.healthCheck))
            await service.check(Self.shared, cluster: b, settings: try #require(b.healthCheck))
        }
        #expect(b.health.isDown(Self.shared))
        #expect(!a.health.isDown(Self.shared))
    }

    /// A cluster whose probe never returns must not hold up another cluster's rounds: `fast` is checked three
    /// times (so it went down after two failures) while `slow`'s first probe is still waiting.
    @Test(.timeLimit(.minutes(1))) func aSlowClusterDoesNotDelayAnother() async throws {
        let runtime = try Self.runtime("""
              - {name: a, targets: ['http://127.0.0.1:9']}
              - {name: slow, targets: ['http://127.0.0.1:10'], health_check: {path: /slow, interval: 10ms, timeout: 10ms}}
              - {name: fast, targets: ['http://127.0.0.1:11'], health_check: {path: /fast, interval: 10ms, timeout: 10ms, unhealthy_threshold: 2}}
            """)
        let (probes, probed) = AsyncStream.makeStream(of: String.self)
        let (gate, openGate) = AsyncStream.makeStream(of: Void.self)
        let service = HealthCheckService(runtime: runtime, logger: Logger(label: "test")) { _, settings in
            probed.yield(settings.path)
            if settings.path == "/slow" {
                for await _ in gate {}  // until the test opens the gate (or is cancelled)
                return true
            }
            return false
        }
        let fast = try Self.cluster(runtime, "fast")
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try? await service.run() }
            var slowStarted = false, fastProbes = 0
            for await path in probes {
                if path == "/slow" { slowStarted = true } else { fastProbes += 1 }
                if slowStarted && fastProbes >= 3 { break }
            }
            // Premise: the slow probe started and is still blocked (the gate opens only below).
            #expect(slowStarted)
            // The third fast probe starts only after the second round finished, which took the target down.
            #expect(fast.health.isDown(TargetKey(host: "127.0.0.1", port: 11)))
            openGate.finish()
            tasks.cancelAll()
        }
    }
}
