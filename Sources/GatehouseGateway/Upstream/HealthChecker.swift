import GatehouseHTTPClient
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
///
/// Each cluster is checked in its own child task: a cluster whose targets take their whole timeout to fail delays
/// only its own next round, never another cluster's (the checks once ran cluster after cluster, so one slow
/// cluster postponed every other one by up to its timeout). A cluster is not checked again while its previous
/// round is still running.
public final class HealthCheckService: Service, Sendable {
    /// Asks one target whether it is healthy (the real one sends `GET path`; tests inject their own).
    public typealias Probe = @Sendable (_ target: TargetKey, _ settings: HealthCheckSettings) async -> Bool

    /// A streak belongs to a target as one cluster checks it: two clusters may share a target and check different
    /// paths, and one streak per target let each cluster's results reset the other's count.
    struct StreakKey: Hashable {
        var cluster: String
        var target: TargetKey
    }

    let runtime: GatewayRuntime
    let logger: Logger
    let prober: Probe
    private let streaks = NIOLockedValueBox([StreakKey: HealthStreak]())
    /// Clusters whose round is running.
    private let inFlight = NIOLockedValueBox(Set<String>())

    public init(runtime: GatewayRuntime, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, probe: Probe? = nil) {
        self.runtime = runtime
        self.logger = logger
        // One keep-alive connection per target between rounds, instead of a new connection per probe.
        let client = HTTPClient(group: group, configuration: .init(maximumIdlePerOrigin: 1))
        self.prober = probe ?? { target, settings in await Self.probe(target, path: settings.path, timeout: settings.timeout, client: client) }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { rounds in
                var nextCheck: [String: ContinuousClock.Instant] = [:]
                while !Task.isCancelled {
                    let now = ContinuousClock.now
                    for cluster in self.runtime.snapshot.clusters {
                        guard let settings = cluster.healthCheck else { continue }
                        if let due = nextCheck[cluster.name], due > now { continue }
                        guard self.inFlight.withLockedValue({ $0.insert(cluster.name).inserted }) else { continue }
                        nextCheck[cluster.name] = now + .nanoseconds(settings.interval.nanoseconds)
                        rounds.addTask {
                            await self.checkTargets(of: cluster, settings: settings)
                            self.inFlight.withLockedValue { _ = $0.remove(cluster.name) }
                        }
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }
    }

    /// One round: every target of `cluster` at once.
    func checkTargets(of cluster: CompiledCluster, settings: HealthCheckSettings) async {
        await withDiscardingTaskGroup { checks in
            for target in cluster.targets {
                checks.addTask { await self.check(target, cluster: cluster, settings: settings) }
            }
        }
    }

    func check(_ target: TargetKey, cluster: CompiledCluster, settings: HealthCheckSettings) async {
        let healthy = await prober(target, settings)
        let isDown = cluster.health.isDown(target)
        let key = StreakKey(cluster: cluster.name, target: target)
        let change = streaks.withLockedValue { streaks in streaks[key, default: HealthStreak()].record(healthy: healthy, isDown: isDown, settings: settings) }
        if let change {
            cluster.health.setDown(target, !change)
            logger.notice(change ? "upstream target healthy again" : "upstream target unhealthy", metadata: ["cluster": "\(cluster.name)", "target": "\(target)"])
        }
    }

    /// One `GET path`: healthy when the answer is 2xx within the timeout.
    static func probe(_ target: TargetKey, path: String, timeout: TimeAmount, group: any EventLoopGroup) async -> Bool {
        await probe(target, path: path, timeout: timeout, client: HTTPClient(group: group, configuration: .init(maximumIdlePerOrigin: 0)))
    }

    static func probe(_ target: TargetKey, path: String, timeout: TimeAmount, client: HTTPClient) async -> Bool {
        var headers = HTTPHeaders()
        headers.add(name: "User-Agent", value: "gatehouse-health-check")
        let response = try? await client.execute(
            HTTPClientRequest(origin: HTTPOrigin(host: target.host, port: target.port, isTLS: false), method: .GET, path: path, headers: headers), timeout: timeout
        )
        return response.map { (200..<300).contains($0.status) } ?? false
    }
}
