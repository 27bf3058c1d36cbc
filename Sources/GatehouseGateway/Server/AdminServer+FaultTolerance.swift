import GatehouseObservability
import GatehousePolicies
import NIOCore

/// The admin listener's views of the fault-tolerance state: `/rate-limits`, `/breakers` and `/admission`, JSON.
extension AdminServer {
    /// Per route and limit: the definition, tracked keys, and requests allowed, limited and delayed since the
    /// limit was created (a reload that keeps the definition keeps the counts).
    static func rateLimitsJSON(_ gateway: CompiledGateway) -> String {
        var routes: [String] = []
        for route in gateway.routeList {
            guard let limits = route.rateLimits else { continue }
            let items = limits.limits.map { limit -> String in
                let stats = limit.stats()
                let definition = limit.definition
                return "{\"name\":\(JSONEscaping.quoted(limit.name)),\"key\":\(JSONEscaping.quoted(definition.key.map(\.description).joined(separator: ",")))"
                    + ",\"rate\":\(definition.rate),\"per_seconds\":\(definition.perSeconds),\"burst\":\(definition.burst)"
                    + ",\"max_delay_ms\":\(definition.maxDelayMilliseconds),\"scope\":\"\(definition.scope.rawValue)\""
                    + ",\"tracked_keys\":\(stats.trackedKeys),\"allowed\":\(stats.allowed),\"limited\":\(stats.limited),\"delayed\":\(stats.delayed)"
                    + clusterJSON(limit) + "}"
            }
            routes.append("{\"route\":\(JSONEscaping.quoted(route.name)),\"limits\":[\(items.joined(separator: ","))]}")
        }
        // The Redis the cluster limits share: reachable now, and writes (round trips) so far, for benchmarks.
        let redis = gateway.routeList.lazy.compactMap { $0.rateLimits?.limits.lazy.compactMap(\.cluster).first }.first?.redis
        let redisJSON = redis.map {
            ",\"redis\":{\"server\":\(JSONEscaping.quoted($0.configuration.description)),\"connected\":\($0.isConnected),\"writes\":\($0.statistics.flushCount)}"
        } ?? ""
        return "{\"routes\":[\(routes.joined(separator: ","))]\(redisJSON)}"
    }

    /// A cluster limit's Redis state: whether it is falling back now (decisions local at this gateway's share), how
    /// often it fell back, and the share it enforces meanwhile. Empty for a local limit.
    private static func clusterJSON(_ limit: CompiledRateLimit) -> String {
        guard let cluster = limit.cluster else { return "" }
        let share = cluster.fallbackLimiter.rule
        return ",\"cluster_instances\":\(cluster.instances),\"fallback\":\(cluster.isFallingBack),\"fallbacks\":\(cluster.snapshot.fallbacks)"
            + ",\"fallback_rate\":\(JSONEscaping.quoted("\(share.rate)/\(share.unit / 1_000_000_000)s")),\"fallback_burst\":\(share.burst)"
    }

    /// Per route with a breaker: its state (`closed`, `open`, `half_open`), failures and requests in the window,
    /// trips, and seconds until it next half-opens (when open).
    static func breakersJSON(_ gateway: CompiledGateway, now: NIODeadline) -> String {
        var routes: [String] = []
        for route in gateway.routeList {
            guard let breaker = route.breaker else { continue }
            let snapshot = breaker.breaker.snapshot(now: now.uptimeNanoseconds)
            let next = snapshot.nextHalfOpenIn.map { String(format3(Double($0) / 1e9)) } ?? "null"
            routes.append(
                "{\"route\":\(JSONEscaping.quoted(route.name)),\"state\":\"\(snapshot.state.rawValue)\",\"failures\":\(snapshot.failures)"
                    + ",\"slow_calls\":\(snapshot.slow),\"requests\":\(snapshot.requests),\"trips\":\(snapshot.trips),\"next_half_open_in_seconds\":\(next)}"
            )
        }
        return "{\"routes\":[\(routes.joined(separator: ","))]}"
    }

    /// Per cluster with admission control: slots in use, waiters, and requests shed by priority class.
    static func admissionJSON(_ gateway: CompiledGateway) -> String {
        let clusters = gateway.admissions.map { admission -> String in
            let snapshot = admission.snapshot()
            return "{\"cluster\":\(JSONEscaping.quoted(admission.clusterName)),\"max_in_flight\":\(admission.definition.maxInFlight)"
                + ",\"in_flight\":\(snapshot.inFlight),\"queued\":\(snapshot.queued),\"queue_size\":\(admission.definition.queueSize)"
                + ",\"shed\":{\"critical\":\(snapshot.shed[PriorityClass.critical.rawValue]),\"normal\":\(snapshot.shed[PriorityClass.normal.rawValue])"
                + ",\"sheddable\":\(snapshot.shed[PriorityClass.sheddable.rawValue])}}"
        }
        return "{\"clusters\":[\(clusters.joined(separator: ","))]}"
    }

    private static func format3(_ value: Double) -> String {
        let thousandths = Int((value * 1000).rounded(.up))
        let fraction = String(thousandths % 1000)
        return "\(thousandths / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }
}
