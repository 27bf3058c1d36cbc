import GatehouseServiceAuth
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Active health checking of one cluster's targets: `GET path` every interval; a target goes down after
/// `unhealthyThreshold` failures in a row and comes back after `healthyThreshold` successes in a row.
public struct HealthCheckSettings: Sendable, Equatable {
    public var path: String
    public var interval: TimeAmount
    public var timeout: TimeAmount
    public var healthyThreshold: Int
    public var unhealthyThreshold: Int

    public init(path: String, interval: TimeAmount, timeout: TimeAmount, healthyThreshold: Int, unhealthyThreshold: Int) {
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
    }
}

/// Counts consecutive results per target and decides up/down. Pure.
public struct HealthStreak: Sendable, Equatable {
    public var successes = 0
    public var failures = 0

    public init() {}

    /// Records a result; returns the new state when it changes (true = healthy).
    public mutating func record(healthy: Bool, isDown: Bool, settings: HealthCheckSettings) -> Bool? {
        if healthy {
            successes += 1
            failures = 0
            if isDown && successes >= settings.healthyThreshold { return true }
        } else {
            failures += 1
            successes = 0
            if !isDown && failures >= settings.unhealthyThreshold { return false }
        }
        return nil
    }
}

/// Runs the health checks of every cluster that configures them, until graceful shutdown.
public final class HealthCheckService: Service, Sendable {
    let runtime: GatewayRuntime
    let logger: Logger
    let group: any EventLoopGroup
    private let streaks = NIOLockedValueBox([TargetKey: HealthStreak]())

    public init(runtime: GatewayRuntime, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.runtime = runtime
        self.logger = logger
        self.group = group
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var nextCheck: [String: ContinuousClock.Instant] = [:]
            while !Task.isCancelled {
                let now = ContinuousClock.now
                for cluster in self.runtime.snapshot.clusters {
                    guard let settings = cluster.healthCheck else { continue }
                    if let due = nextCheck[cluster.name], due > now { continue }
                    nextCheck[cluster.name] = now + .nanoseconds(settings.interval.nanoseconds)
                    await withTaskGroup(of: Void.self) { group in
                        for target in cluster.targets {
                            group.addTask { await self.check(target, cluster: cluster, settings: settings) }
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    func check(_ target: TargetKey, cluster: CompiledCluster, settings: HealthCheckSettings) async {
        let healthy = await Self.probe(target, path: settings.path, timeout: settings.timeout, group: group)
        let isDown = cluster.health.isDown(target)
        let change = streaks.withLockedValue { streaks in streaks[target, default: HealthStreak()].record(healthy: healthy, isDown: isDown, settings: settings) }
        if let change {
            cluster.health.setDown(target, !change)
            logger.notice(change ? "upstream target healthy again" : "upstream target unhealthy", metadata: ["cluster": "\(cluster.name)", "target": "\(target)"])
        }
    }

    /// One `GET path`: healthy when the answer is 2xx within the timeout.
    static func probe(_ target: TargetKey, path: String, timeout: TimeAmount, group: any EventLoopGroup) async -> Bool {
        var headers = HTTPHeaders()
        headers.add(name: "User-Agent", value: "gatehouse-health-check")
        let response = try? await SimpleHTTPClient.send(
            host: target.host, port: target.port, method: .GET, path: path, headers: headers, body: nil, timeout: timeout, group: group
        )
        return response.map { (200..<300).contains($0.status) } ?? false
    }
}
