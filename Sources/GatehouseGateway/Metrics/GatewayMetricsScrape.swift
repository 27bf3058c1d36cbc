import GatehouseObservability
import GatehousePolicies
import NIOCore

/// `GET /metrics` on the gateway's admin listener: every loop's counters, copied on their loop and summed, plus the
/// gauges read at scrape time (in-flight exchanges, connections, pools) and the token validator's counters.
extension GatewayServer {
    /// The Prometheus text of the gateway's metrics.
    func metricsText(on eventLoop: any EventLoop) -> EventLoopFuture<String> {
        let gateway = runtime.snapshot
        let listeners = listenerConnectionCounts()
        guard let loops = currentLoopStates else {
            return eventLoop.makeSucceededFuture(
                GatewayMetricsText.render(gateway: gateway, metrics: GatewayLoopMetrics(), inFlight: 0, pools: [:], connections: listeners)
            )
        }
        let targets = Set(gateway.clusters.flatMap(\.targets))
        return loops.collect(on: eventLoop) { state in
            var pool: [TargetKey: (open: Int, idle: Int)] = [:]
            for target in targets { pool[target] = (state.pool.openConnections(target), state.pool.idleConnections(target)) }
            return LoopScrape(metrics: GatewayLoopMetricsBox(value: state.metrics.snapshot()), inFlight: state.exchangesInFlight, pool: pool)
        }.map { scrapes in
            var metrics = GatewayLoopMetrics()
            var inFlight = 0
            var pools: [TargetKey: (open: Int, idle: Int)] = [:]
            for scrape in scrapes {
                metrics.add(scrape.metrics.value)
                inFlight += scrape.inFlight
                for (target, counts) in scrape.pool {
                    let sum = pools[target] ?? (0, 0)
                    pools[target] = (sum.open + counts.open, sum.idle + counts.idle)
                }
            }
            return GatewayMetricsText.render(gateway: gateway, metrics: metrics, inFlight: inFlight, pools: pools, connections: listeners)
        }
    }
}

/// Renders the gateway's families (every one with its `# HELP` and `# TYPE`, samples or not).
enum GatewayMetricsText {
    static func render(
        gateway: CompiledGateway, metrics: GatewayLoopMetrics, inFlight: Int, pools: [TargetKey: (open: Int, idle: Int)], connections: [(String, Int)]
    ) -> String {
        let labels = gateway.metricLabels.snapshot
        var text = PrometheusText()

        text.family("gatehouse_gateway_requests_total", .counter, help: "Requests by route (- when refused before routing), method and status class (0xx: the client left before a response).")
        for route in labels.routes.indices {
            for method in MethodLabel.allCases {
                for statusClass in 0..<GatewayLoopMetrics.statusClasses {
                    let value = metrics.requests[(route * GatewayLoopMetrics.methods + method.rawValue) * GatewayLoopMetrics.statusClasses + statusClass]
                    guard value > 0 else { continue }
                    text.sample("gatehouse_gateway_requests_total", [("route", labels.routes[route]), ("method", method.name), ("code", "\(statusClass)xx")], value)
                }
            }
        }

        text.family("gatehouse_gateway_request_duration_seconds", .histogram, help: "Time from a request's head to the end of its response, by route.")
        for route in labels.routes.indices {
            metrics.requestDurations.render("gatehouse_gateway_request_duration_seconds", route, labels: [("route", labels.routes[route])], into: &text, skipEmpty: route == 0)
        }

        text.family("gatehouse_gateway_upstream_requests_total", .counter, help: "Upstream tries by cluster, target and outcome (ok, connect_error, reset, timeout, 5xx).")
        for (index, pair) in labels.targets.enumerated() {
            for outcome in UpstreamOutcome.allCases {
                text.sample(
                    "gatehouse_gateway_upstream_requests_total", [("cluster", pair.cluster), ("target", pair.target), ("outcome", outcome.name)],
                    metrics.upstreamRequests[index * UpstreamOutcome.allCases.count + outcome.rawValue]
                )
            }
        }

        text.family("gatehouse_gateway_upstream_duration_seconds", .histogram, help: "Time from the start of an upstream try to its response head, by cluster.")
        for (index, cluster) in labels.clusters.enumerated() {
            metrics.upstreamDurations.render("gatehouse_gateway_upstream_duration_seconds", index, labels: [("cluster", cluster)], into: &text, skipEmpty: false)
        }

        text.family("gatehouse_gateway_in_flight_requests", .gauge, help: "Exchanges in progress.")
        text.sample("gatehouse_gateway_in_flight_requests", [], inFlight)

        text.family("gatehouse_gateway_connections", .gauge, help: "Open client connections by listener.")
        for (listener, count) in connections { text.sample("gatehouse_gateway_connections", [("listener", listener)], count) }

        text.family("gatehouse_gateway_upstream_pool_connections", .gauge, help: "Upstream connections by cluster and state (idle, active).")
        for cluster in gateway.clusters {
            var open = 0
            var idle = 0
            for target in cluster.targets {
                open += pools[target]?.open ?? 0
                idle += pools[target]?.idle ?? 0
            }
            text.sample("gatehouse_gateway_upstream_pool_connections", [("cluster", cluster.name), ("state", "idle")], idle)
            text.sample("gatehouse_gateway_upstream_pool_connections", [("cluster", cluster.name), ("state", "active")], max(open - idle, 0))
        }

        // The fault-tolerance state is shared by the loops (exact limits, one breaker per route, one queue per
        // cluster), so it is read from the shared objects at scrape time rather than summed from loop counters.
        text.family("gatehouse_gateway_admission_queue_depth", .gauge, help: "Requests waiting in a cluster's admission queue.")
        for admission in gateway.admissions {
            text.sample("gatehouse_gateway_admission_queue_depth", [("cluster", admission.clusterName)], admission.snapshot().queued)
        }

        text.family("gatehouse_gateway_event_loop_lag_seconds", .gauge, help: "How late the most delayed event loop ran its last 100 ms tick.")
        text.sample("gatehouse_gateway_event_loop_lag_seconds", [], Double(metrics.eventLoopLagNanoseconds) / 1e9)

        text.family("gatehouse_gateway_rate_limited_total", .counter, help: "Requests refused by a route's rate limit, by route and limit.")
        for route in gateway.routeList {
            for limit in route.rateLimits?.limits ?? [] {
                text.sample("gatehouse_gateway_rate_limited_total", [("route", route.name), ("limit", limit.name)], limit.stats().limited)
            }
        }

        text.family(
            "gatehouse_gateway_rate_limit_fallback", .gauge,
            help: "1 while a scope: cluster limit decides locally (Redis unreachable or slower than its timeout), else 0; by route and limit."
        )
        for route in gateway.routeList {
            for limit in route.rateLimits?.limits ?? [] {
                guard let cluster = limit.cluster else { continue }
                text.sample("gatehouse_gateway_rate_limit_fallback", [("route", route.name), ("limit", limit.name)], cluster.isFallingBack ? 1 : 0)
            }
        }

        text.family("gatehouse_gateway_circuit_breaker_state", .gauge, help: "A route's circuit breaker: 0 closed, 1 half-open, 2 open.")
        let now = NIODeadline.now().uptimeNanoseconds
        for route in gateway.routeList {
            guard let breaker = route.breaker else { continue }
            let state: Int
            switch breaker.breaker.snapshot(now: now).state {
            case .closed: state = 0
            case .halfOpen: state = 1
            case .open: state = 2
            }
            text.sample("gatehouse_gateway_circuit_breaker_state", [("route", route.name)], state)
        }

        text.family("gatehouse_gateway_shed_total", .counter, help: "Requests shed by a cluster's admission queue (refused, displaced or timed out), by priority.")
        for admission in gateway.admissions {
            let shed = admission.snapshot().shed
            for priority in [PriorityClass.sheddable, .normal, .critical] {
                text.sample("gatehouse_gateway_shed_total", [("cluster", admission.clusterName), ("priority", "\(priority)")], shed[priority.rawValue])
            }
        }

        let validator = gateway.tokenValidator
        let statistics = validator?.statistics
        text.family("gatehouse_gateway_token_cache_total", .counter, help: "Token cache lookups by result (hit, negative_hit, miss, coalesced).")
        text.sample("gatehouse_gateway_token_cache_total", [("result", "hit")], statistics?.cache.hits ?? 0)
        text.sample("gatehouse_gateway_token_cache_total", [("result", "negative_hit")], statistics?.cache.negativeHits ?? 0)
        text.sample("gatehouse_gateway_token_cache_total", [("result", "miss")], statistics?.cache.misses ?? 0)
        text.sample("gatehouse_gateway_token_cache_total", [("result", "coalesced")], statistics?.cache.coalesced ?? 0)

        text.family("gatehouse_gateway_token_exchange_duration_seconds", .histogram, help: "Token exchanges (or introspections) at the authorization server, answered or not.")
        if let validator {
            validator.exchangeDurations.render("gatehouse_gateway_token_exchange_duration_seconds", 0, labels: [], into: &text)
        } else {
            text.histogram("gatehouse_gateway_token_exchange_duration_seconds", bounds: HistogramBuckets.requestDuration.seconds, counts: [Int](repeating: 0, count: HistogramBuckets.requestDuration.slots), sum: 0)
        }

        text.family("gatehouse_gateway_token_exchanges_total", .counter, help: "Token exchanges (or introspections) by result (ok, inactive, unavailable).")
        for (index, result) in TokenValidator.exchangeResultNames.enumerated() {
            text.sample("gatehouse_gateway_token_exchanges_total", [("result", result)], validator?.exchangeResults[index] ?? 0)
        }

        text.family("gatehouse_gateway_jwks_refreshes_total", .counter, help: "Fetches of the authorization server's key set.")
        text.sample("gatehouse_gateway_jwks_refreshes_total", [], validator?.jwksRefreshes[0] ?? 0)
        return text.text
    }
}
