import GatehouseConfiguration
import Testing

private typealias Gateway = GatewayConfiguration

/// A gateway file with one cluster (`cluster` fields added) and one route (`route` fields added).
private func gateway(route: String = "", cluster: String = "", extra: String = "") -> String {
    """
    listeners: [{port: 8080}]
    clusters: [{name: backend, targets: ['http://127.0.0.1:18080']\(cluster.isEmpty ? "" : ", " + cluster)}]
    routes: [{name: api, cluster: backend\(route.isEmpty ? "" : ", " + route)}]
    \(extra)
    """
}

private let auth = "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: gw-secret}"

@Suite struct FaultToleranceConfigurationTests {
    @Test func nothingIsOnByDefault() throws {
        let configuration = try Gateway.parse(yaml: gateway())
        let route = configuration.routes[0]
        #expect(route.priority == .normal)
        #expect(route.priorityOverrides.isEmpty)
        #expect(route.rateLimits.isEmpty)
        #expect(route.circuitBreaker == nil)
        #expect(configuration.clusters[0].admission == nil)
    }

    @Test func theIssuesExampleIsReadWithEveryKey() throws {
        let yaml = """
            listeners: [{port: 8080}]
            \(auth)
            clusters:
              - name: orders
                targets: [http://127.0.0.1:8081]
                admission:
                  max_in_flight: 100
                  queue: {size: 200, timeout: 1s}
            routes:
              - name: orders
                match: {path_prefix: /api/orders}
                cluster: orders
                auth: {mode: any}
                priority: sheddable
                priority_overrides:
                  - {client_ids: [partner-app], priority: critical}
                  - {scopes_any_of: [vip], priority: critical}
                rate_limits:
                  - name: per-client
                    key: client_id
                    rate: 100/s
                    burst: 20
                    max_delay: 250ms
                  - name: compound
                    key: [client_id, 'header:X-Tenant']
                    rate: 600/m
                circuit_breaker:
                  window: 10s
                  buckets: 10
                  min_requests: 20
                  error_rate: 50%
                  slow_call: {duration: 2s, rate: 80%}
                  open_for: 5s
                  max_open_for: 60s
                  half_open_requests: 3
                  failure_statuses: [500, 502, 503, 504]
                  fallback:
                    status: 200
                    content_type: application/json
                    body: '{"orders":[],"degraded":true}'
            """
        let configuration = try Gateway.parse(yaml: yaml)
        #expect(configuration.clusters[0].admission == .init(maxInFlight: 100, queueSize: 200, queueTimeoutMilliseconds: 1000))
        let route = configuration.routes[0]
        #expect(route.priority == .sheddable)
        #expect(route.priorityOverrides == [.init(clientIDs: ["partner-app"], priority: .critical), .init(scopesAnyOf: ["vip"], priority: .critical)])
        #expect(route.rateLimits.count == 2)
        let perClient = route.rateLimits[0]
        #expect(perClient.name == "per-client" && perClient.key == [.clientID] && perClient.rate == 100 && perClient.perSeconds == 1)
        #expect(perClient.burst == 20 && perClient.maxDelayMilliseconds == 250 && perClient.scope == .local)
        let compound = route.rateLimits[1]
        #expect(compound.key == [.clientID, .header("x-tenant")] && compound.rate == 600 && compound.perSeconds == 60)
        #expect(compound.burst == 600)  // one unit's worth of rate
        let breaker = try #require(route.circuitBreaker)
        #expect(breaker.windowMilliseconds == 10_000 && breaker.buckets == 10 && breaker.minRequests == 20 && breaker.errorRate == 0.5)
        #expect(breaker.slowCallMilliseconds == 2000 && breaker.slowCallRate == 0.8)
        #expect(breaker.openForMilliseconds == 5000 && breaker.maxOpenForMilliseconds == 60_000 && breaker.halfOpenRequests == 3)
        #expect(breaker.failureStatuses == [500, 502, 503, 504])
        #expect(breaker.fallback == .init(status: 200, contentType: "application/json", body: "{\"orders\":[],\"degraded\":true}"))
    }

    @Test func breakerAndAdmissionDefaultsAreHystrixsAndTheIssues() throws {
        let configuration = try Gateway.parse(yaml: gateway(route: "circuit_breaker: {}", cluster: "admission: {max_in_flight: 5}"))
        #expect(configuration.routes[0].circuitBreaker == GatewayConfiguration.CircuitBreaker())
        let breaker = GatewayConfiguration.CircuitBreaker()
        #expect(breaker.windowMilliseconds == 10_000 && breaker.buckets == 10 && breaker.minRequests == 20 && breaker.errorRate == 0.5)
        #expect(breaker.openForMilliseconds == 5000 && breaker.maxOpenForMilliseconds == 60_000 && breaker.halfOpenRequests == 3)
        #expect(configuration.clusters[0].admission == .init(maxInFlight: 5, queueSize: 200, queueTimeoutMilliseconds: 1000))
    }

    @Test func aClusterLimitWithRedisIsReadWithItsInstances() throws {
        let configuration = try Gateway.parse(
            yaml: gateway(route: "rate_limits: [{key: ip, rate: 100/s, scope: cluster, cluster_instances: 2}, {name: own, key: ip, rate: 5/s}]", extra: "redis: {url: 'redis://127.0.0.1:6390', timeout: 20ms}")
        )
        let limits = configuration.routes[0].rateLimits
        #expect(limits[0].scope == .cluster && limits[0].clusterInstances == 2 && limits[0].burst == 100)
        #expect(limits[1].scope == .local && limits[1].clusterInstances == 1)
        #expect(configuration.redis?.port == 6390 && configuration.redis?.timeoutMilliseconds == 20)
    }

    @Test func aClusterLimitWithoutRedisNamesTheSectionItNeeds() throws {
        let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(route: "rate_limits: [{key: ip, rate: 1/s, scope: cluster}]")) }
        #expect(error?.code == .missingKey)
        #expect(error?.description.contains("redis:") == true, "\(error?.description ?? "")")
        #expect(error?.description.contains("not available yet") == false)
    }

    @Test(arguments: [
        (gateway(route: "priority: urgent"), "routes[0].priority"),
        (gateway(route: "rate_limits: [{key: ip}]"), "routes[0].rate_limits[0].rate"),
        (gateway(route: "rate_limits: [{rate: 10/s}]"), "routes[0].rate_limits[0].key"),
        (gateway(route: "rate_limits: [{key: ip, rate: 10/d}]"), "routes[0].rate_limits[0].rate"),
        (gateway(route: "rate_limits: [{key: ip, rate: 0/s}]"), "routes[0].rate_limits[0].rate"),
        (gateway(route: "rate_limits: [{key: ip, rate: ten/s}]"), "routes[0].rate_limits[0].rate"),
        (gateway(route: "rate_limits: [{key: cookie, rate: 10/s}]"), "routes[0].rate_limits[0].key"),
        (gateway(route: "rate_limits: [{key: 'header:', rate: 10/s}]"), "routes[0].rate_limits[0].key"),
        (gateway(route: "rate_limits: [{key: ip, rate: 10/s, burst: 0}]"), "routes[0].rate_limits[0].burst"),
        (gateway(route: "rate_limits: [{key: ip, rate: 10/s, max_delay: 31s}]"), "routes[0].rate_limits[0].max_delay"),
        (gateway(route: "rate_limits: [{name: a, key: ip, rate: 1/s}, {name: a, key: ip, rate: 2/s}]"), "routes[0].rate_limits[1].name"),
        (gateway(route: "rate_limits: [{name: 'a b', key: ip, rate: 1/s}]"), "routes[0].rate_limits[0].name"),
        (gateway(route: "rate_limits: [{key: ip, rate: 1/s, cluster_instances: 2}]"), "routes[0].rate_limits[0].cluster_instances"),
        (gateway(route: "rate_limits: [{key: ip, rate: 1/s, scope: cluster}]"), "routes[0].rate_limits[0].scope"),  // no redis: section
        (gateway(route: "rate_limits: [{name: a, key: ip, rate: 1/s}, {name: b, key: ip, rate: 1/s, scope: cluster, cluster_instances: 2}]"), "routes[0].rate_limits[1].scope"),
        (gateway(route: "rate_limits: [{key: ip, rate: 1/s, scope: cluster, cluster_instances: 0}]", extra: "redis: {url: 'redis://127.0.0.1:6379'}"), "routes[0].rate_limits[0].cluster_instances"),
        (gateway(route: "rate_limits: [{key: ip, rate: 1/s, scope: global}]"), "routes[0].rate_limits[0].scope"),
        (gateway(route: "rate_limits: [{key: ip, rate: 1/s, per: 1s}]"), "routes[0].rate_limits[0].per"),
        (gateway(route: "priority_overrides: [{client_ids: [a], priority: critical}]"), "routes[0].priority_overrides"),
        (gateway(route: "auth: {mode: jwt}, priority_overrides: [{priority: critical}]", extra: auth), "routes[0].priority_overrides[0].client_ids"),
        (gateway(route: "circuit_breaker: {error_rate: 0%}"), "routes[0].circuit_breaker.error_rate"),
        (gateway(route: "circuit_breaker: {error_rate: 150%}"), "routes[0].circuit_breaker.error_rate"),
        (gateway(route: "circuit_breaker: {window: 10s, buckets: 3}"), "routes[0].circuit_breaker.buckets"),
        (gateway(route: "circuit_breaker: {open_for: 10s, max_open_for: 5s}"), "routes[0].circuit_breaker.max_open_for"),
        (gateway(route: "circuit_breaker: {slow_call: {rate: 50%}}"), "routes[0].circuit_breaker.slow_call.duration"),
        (gateway(route: "circuit_breaker: {failure_statuses: [700]}"), "routes[0].circuit_breaker.failure_statuses[0]"),
        (gateway(route: "circuit_breaker: {half_open_requests: 0}"), "routes[0].circuit_breaker.half_open_requests"),
        (gateway(route: "circuit_breaker: {fallback: {status: 99}}"), "routes[0].circuit_breaker.fallback.status"),
        (gateway(route: "circuit_breaker: {timeout: 1s}"), "routes[0].circuit_breaker.timeout"),
        (gateway(cluster: "admission: {queue: {size: 5}}"), "clusters[0].admission.max_in_flight"),
        (gateway(cluster: "admission: {max_in_flight: 0}"), "clusters[0].admission.max_in_flight"),
        (gateway(cluster: "admission: {max_in_flight: 1, queue: {size: -1}}"), "clusters[0].admission.queue.size"),
        (gateway(cluster: "admission: {max_in_flight: 1, queue: {timeout: 0ms}}"), "clusters[0].admission.queue.timeout"),
    ])
    func badSettingsAreNamedByTheirKeyPath(yaml: String, keyPath: String) throws {
        let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: yaml) }
        #expect(error?.keyPath == keyPath, "\(error?.description ?? "no error") for\n\(yaml)")
    }
}
