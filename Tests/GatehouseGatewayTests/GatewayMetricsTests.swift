import Foundation
import GatehouseConfiguration
import GatehouseObservability
import NIOCore
import Testing

@testable import GatehouseGateway

/// The gateway's metrics as the data path feeds them: through the real pipeline (`ProxyHarness`), then rendered
/// as a scrape would render them.
@Suite struct GatewayMetricsTests {
    static let yaml = DownstreamHandlerTests.yaml

    /// The scrape's text for the harness's loop (the same YAML compiles to the same label indices).
    static func scrape(_ proxy: ProxyHarness) throws -> String {
        let gateway = GatewayCompiler().compile(try GatewayConfiguration.parse(yaml: yaml))
        return GatewayMetricsText.render(gateway: gateway, metrics: proxy.state.metrics, inFlight: proxy.state.exchangesInFlight, pools: [:], connections: [("127.0.0.1:8080", 1)])
    }

    @Test func aProxiedRequestCountsByRouteMethodAndStatusClass() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(proxy.state.exchangesInFlight == 1)
        proxy.advance(.milliseconds(3))
        try proxy.respond(on: upstream, DownstreamHandlerTests.ok)
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 200 "))
        #expect(proxy.state.exchangesInFlight == 0)
        try proxy.client("POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        try proxy.respond(on: upstream, "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")
        _ = try proxy.clientReceived()
        let text = try Self.scrape(proxy)
        #expect(text.contains("gatehouse_gateway_requests_total{route=\"api\",method=\"GET\",code=\"2xx\"} 1\n"), "\(text)")
        #expect(text.contains("gatehouse_gateway_requests_total{route=\"api\",method=\"POST\",code=\"5xx\"} 1\n"))
        // 3 ms on the injected clock: above the 2.5 ms bound, within 5 ms.
        #expect(text.contains("gatehouse_gateway_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"} 1\n"))
        #expect(text.contains("gatehouse_gateway_request_duration_seconds_bucket{route=\"api\",le=\"0.005\"} 2\n"))
        #expect(text.contains("gatehouse_gateway_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 2\n"))
        #expect(text.contains("gatehouse_gateway_request_duration_seconds_count{route=\"api\"} 2\n"))
        #expect(text.contains("gatehouse_gateway_request_duration_seconds_sum{route=\"api\"} 0.003\n"))
        // Per attempt: one ok, one 5xx, on the target of cluster `one`.
        #expect(text.contains("gatehouse_gateway_upstream_requests_total{cluster=\"one\",target=\"127.0.0.1:9001\",outcome=\"ok\"} 1\n"))
        #expect(text.contains("gatehouse_gateway_upstream_requests_total{cluster=\"one\",target=\"127.0.0.1:9001\",outcome=\"5xx\"} 1\n"))
        #expect(text.contains("gatehouse_gateway_upstream_duration_seconds_count{cluster=\"one\"} 2\n"))
        #expect(text.contains("gatehouse_gateway_in_flight_requests 0\n"))
        #expect(text.contains("gatehouse_gateway_connections{listener=\"127.0.0.1:8080\"} 1\n"))
    }

    @Test func aRefusalBeforeRoutingIsCountedUnderTheDashRoute() throws {
        let proxy = try ProxyHarness(Self.yaml)
        try proxy.client("PURGE /nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 404 "))
        let text = try Self.scrape(proxy)
        // An unknown method is `other`: a client cannot make new series.
        #expect(text.contains("gatehouse_gateway_requests_total{route=\"-\",method=\"other\",code=\"4xx\"} 1\n"), "\(text)")
        #expect(!text.contains("PURGE"))
    }

    @Test func aPerTryTimeoutCountsAsTheAttemptsOutcome() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /api/slow "))
        proxy.advance(.milliseconds(2200))
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 504 "))
        let text = try Self.scrape(proxy)
        #expect(text.contains("gatehouse_gateway_upstream_requests_total{cluster=\"one\",target=\"127.0.0.1:9001\",outcome=\"timeout\"} 1\n"), "\(text)")
        #expect(text.contains("gatehouse_gateway_requests_total{route=\"api\",method=\"GET\",code=\"5xx\"} 1\n"))
    }

    @Test func aResetAndItsRetryAreTwoAttempts() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let first = try proxy.upstream(9001)
        let second = try proxy.upstream(9002)
        try proxy.client("GET /retry/x HTTP/1.1\r\nHost: a\r\n\r\n")
        let firstGot = try proxy.received(by: first)
        let (failing, other) = firstGot.isEmpty ? (second, first) : (first, second)
        try failing.close().wait()
        _ = try proxy.received(by: other)
        try proxy.respond(on: other, DownstreamHandlerTests.ok)
        _ = try proxy.clientReceived()
        let text = try Self.scrape(proxy)
        let resets = text.split(separator: "\n").filter { $0.hasPrefix("gatehouse_gateway_upstream_requests_total{cluster=\"two\"") && $0.contains("outcome=\"reset\"} 1") }
        let oks = text.split(separator: "\n").filter { $0.hasPrefix("gatehouse_gateway_upstream_requests_total{cluster=\"two\"") && $0.contains("outcome=\"ok\"} 1") }
        #expect(resets.count == 1 && oks.count == 1, "\(text)")
        #expect(text.contains("gatehouse_gateway_requests_total{route=\"retried\",method=\"GET\",code=\"2xx\"} 1\n"))
    }

    @Test func everyContractFamilyIsPresentBeforeAnyTraffic() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let text = try Self.scrape(proxy)
        for family in [
            "gatehouse_gateway_requests_total counter", "gatehouse_gateway_request_duration_seconds histogram",
            "gatehouse_gateway_upstream_requests_total counter", "gatehouse_gateway_upstream_duration_seconds histogram",
            "gatehouse_gateway_in_flight_requests gauge", "gatehouse_gateway_connections gauge", "gatehouse_gateway_upstream_pool_connections gauge",
            "gatehouse_gateway_admission_queue_depth gauge", "gatehouse_gateway_event_loop_lag_seconds gauge", "gatehouse_gateway_rate_limited_total counter", "gatehouse_gateway_rate_limit_fallback gauge",
            "gatehouse_gateway_circuit_breaker_state gauge", "gatehouse_gateway_shed_total counter", "gatehouse_gateway_token_cache_total counter",
            "gatehouse_gateway_token_exchange_duration_seconds histogram", "gatehouse_gateway_jwks_refreshes_total counter",
        ] {
            #expect(text.contains("# TYPE \(family)\n"), "\(family)")
        }
        // The policy families are read from the routes' and clusters' own limiters, breakers and queues: none is
        // configured here, so the families have no series (FaultTolerancePipelineTests covers configured ones).
        #expect(!text.contains("gatehouse_gateway_circuit_breaker_state{"))
        #expect(!text.contains("gatehouse_gateway_shed_total{"))
        #expect(!text.contains("gatehouse_gateway_admission_queue_depth{"))
    }

    @Test func theLoopsTickMeasuresItsLag() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let state = proxy.state
        state.lastTickEnd = .now() - .milliseconds(350)
        state.tickObservability()
        // Due 100 ms after the previous tick's end, it ran 350 ms after it: 250 ms late (and the real clock moved on).
        #expect(state.metrics.eventLoopLagNanoseconds >= 250_000_000 && state.metrics.eventLoopLagNanoseconds < 1_000_000_000)
    }

    @Test func labelIndicesSurviveAReload() throws {
        let compiler = GatewayCompiler()
        let first = compiler.compile(try GatewayConfiguration.parse(yaml: Self.yaml))
        let reloaded = compiler.compile(
            try GatewayConfiguration.parse(
                yaml: Self.yaml.replacingOccurrences(of: "  - {name: api,", with: "  - {name: new, match: {path_prefix: /new}, cluster: one}\n  - {name: api,")
            )
        )
        let api = try #require(first.routes.match(host: nil, path: "/api", method: "GET")?.route.metricsIndex)
        #expect(api == 1)  // after `-`
        #expect(reloaded.routes.match(host: nil, path: "/api", method: "GET")?.route.metricsIndex == api)
        #expect(reloaded.routes.match(host: nil, path: "/new", method: "GET")?.route.metricsIndex == 3)  // after -, api, retried
    }
}
