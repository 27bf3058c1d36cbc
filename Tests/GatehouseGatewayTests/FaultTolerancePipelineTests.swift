import GatehouseConfiguration
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// The fault-tolerance policies in the real pipeline on virtual time (`ProxyHarness`): what the upstream received
/// and what the client got, with suspensions (a shaped request, a queued one) resumed by the clock alone.
@Suite struct FaultTolerancePipelineTests {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    static let failure = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"

    static func yaml(route: String, cluster: String = "") -> String {
        """
        listeners: [{port: 8080}]
        clusters:
          - {name: one, targets: ['http://127.0.0.1:9001'], retries: {attempts: 0}, outlier_detection: {consecutive_failures: 0}\(cluster.isEmpty ? "" : ", " + cluster)}
        routes:
          - {name: api, match: {path_prefix: /}, cluster: one, timeouts: {per_try: 5s, total: 5s}, \(route)}
        """
    }

    @Test func aRefusedRequestNeverReachesTheUpstreamAndTheBucketRefillsOnTheClock() throws {
        let proxy = try ProxyHarness(Self.yaml(route: "rate_limits: [{name: per-ip, key: ip, rate: 1/s, burst: 2}]"))
        let upstream = try proxy.upstream(9001)
        for index in 1...2 {
            try proxy.client("GET /\(index) HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(try proxy.received(by: upstream).hasPrefix("GET /\(index) "))
            try proxy.respond(on: upstream, Self.ok)
            let answer = try proxy.clientReceived()
            #expect(answer.contains("\r\nRateLimit-Policy: \"per-ip\";q=2;w=2\r\n"), "\(answer)")
            #expect(answer.contains("\r\nRateLimit: \"per-ip\";r=\(2 - index);t=\(index)\r\n"), "\(answer)")
        }
        try proxy.client("GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        let refused = try proxy.clientReceived()
        #expect(refused.hasPrefix("HTTP/1.1 429 Too Many Requests\r\n"), "\(refused)")
        #expect(refused.contains("\r\nRetry-After: 1\r\n") && refused.contains("\"error\":\"rate_limited\""))
        #expect(try proxy.received(by: upstream).isEmpty)
        proxy.advance(.milliseconds(999))
        try proxy.client("GET /4 HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 429 "))  // one emission interval is 1 s
        proxy.advance(.milliseconds(1))
        try proxy.client("GET /5 HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /5 "))
        #expect(proxy.state.outcomes.rejected == 2)
    }

    @Test func aShapedRequestIsSuspendedAndResumedByTheClock() throws {
        let proxy = try ProxyHarness(Self.yaml(route: "rate_limits: [{name: shaped, key: route, rate: 2/s, burst: 1, max_delay: 2s}]"))
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /first "))
        try proxy.respond(on: upstream, Self.ok)
        _ = try proxy.clientReceived()
        try proxy.client("GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).isEmpty)  // held for its turn, 500 ms away
        proxy.advance(.milliseconds(499))
        #expect(try proxy.received(by: upstream).isEmpty)
        proxy.advance(.milliseconds(1))
        #expect(try proxy.received(by: upstream).hasPrefix("GET /second "))
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 200 OK"))
    }

    @Test func anOpenBreakerAnswersWithoutTheUpstreamThenLetsOneTrialThrough() throws {
        let proxy = try ProxyHarness(
            Self.yaml(route: "circuit_breaker: {min_requests: 2, error_rate: 50%, open_for: 1s, half_open_requests: 1, fallback: {status: 200, body: degraded}}")
        )
        let upstream = try proxy.upstream(9001)
        for index in 1...2 {
            try proxy.client("GET /\(index) HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(try proxy.received(by: upstream).hasPrefix("GET /\(index) "))
            try proxy.respond(on: upstream, Self.failure)
            #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 500 "))
        }
        try proxy.client("GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        let fallback = try proxy.clientReceived()
        #expect(fallback.hasPrefix("HTTP/1.1 200 OK\r\n") && fallback.hasSuffix("\r\n\r\ndegraded"), "\(fallback)")
        #expect(try proxy.received(by: upstream).isEmpty)
        proxy.advance(.seconds(1))
        try proxy.client("GET /trial HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /trial "))
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.clientReceived().hasSuffix("\r\n\r\nok"))
        #expect(proxy.runtime.snapshot.routeList[0].breaker?.breaker.snapshot(now: proxy.loop.now.uptimeNanoseconds).state == .closed)
        let metrics = GatewayMetricsText.render(gateway: proxy.runtime.snapshot, metrics: GatewayLoopMetrics(), inFlight: 0, pools: [:], connections: [])
        #expect(metrics.contains("gatehouse_gateway_circuit_breaker_state{route=\"api\"} 0\n"), "\(metrics)")
    }

    @Test func aQueuedRequestWaitsForTheSlotAndIsForwardedWhenItFrees() throws {
        let proxy = try ProxyHarness(Self.yaml(route: "priority: normal", cluster: "admission: {max_in_flight: 1, queue: {size: 1, timeout: 2s}}"))
        let upstream = try proxy.upstream(9001)
        let second = try proxy.anotherClient(port: 40001)
        try proxy.client("GET /holder HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /holder "))
        try second.writeInbound(ByteBuffer(string: "GET /waiter HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(try proxy.received(by: upstream).isEmpty)  // queued: the only slot is taken
        let third = try proxy.anotherClient(port: 40002)
        try third.writeInbound(ByteBuffer(string: "GET /shed HTTP/1.1\r\nHost: a\r\n\r\n"))
        let shed = try proxy.answer(to: third)
        #expect(shed.hasPrefix("HTTP/1.1 503 ") && shed.contains("\"error\":\"overloaded\"") && shed.contains("\r\nRetry-After: 1\r\n"), "\(shed)")
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.clientReceived().hasSuffix("\r\n\r\nok"))
        // The holder's slot went to the waiter, on the connection the holder gave back.
        #expect(try proxy.received(by: upstream).hasPrefix("GET /waiter "))
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.answer(to: second).hasSuffix("\r\n\r\nok"))
        let admission = try #require(proxy.runtime.snapshot.admissions.first).snapshot()
        #expect(admission.inFlight == 0 && admission.queued == 0 && admission.shed == [0, 1, 0])  // by class: sheddable, normal, critical
        let metrics = GatewayMetricsText.render(gateway: proxy.runtime.snapshot, metrics: GatewayLoopMetrics(), inFlight: 0, pools: [:], connections: [])
        #expect(metrics.contains("gatehouse_gateway_shed_total{cluster=\"one\",priority=\"normal\"} 1\n"), "\(metrics)")
        #expect(metrics.contains("gatehouse_gateway_admission_queue_depth{cluster=\"one\"} 0\n"))
    }

    @Test func aWaiterPastTheQueueTimeoutIsAnsweredAndAClientThatLeavesFreesItsPlace() throws {
        let proxy = try ProxyHarness(Self.yaml(route: "priority: normal", cluster: "admission: {max_in_flight: 1, queue: {size: 2, timeout: 1s}}"))
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /holder HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /holder "))
        let leaving = try proxy.anotherClient(port: 40001)
        try leaving.writeInbound(ByteBuffer(string: "GET /leaving HTTP/1.1\r\nHost: a\r\n\r\n"))
        let waiting = try proxy.anotherClient(port: 40002)
        try waiting.writeInbound(ByteBuffer(string: "GET /waiting HTTP/1.1\r\nHost: a\r\n\r\n"))
        let admission = try #require(proxy.runtime.snapshot.admissions.first)
        #expect(admission.snapshot().queued == 2)
        leaving.pipeline.fireChannelInactive()  // the client went away
        #expect(admission.snapshot().queued == 1)
        proxy.advance(.milliseconds(1100))  // past the queue timeout (the ticker checks every 100 ms)
        let answer = try proxy.answer(to: waiting)
        #expect(answer.hasPrefix("HTTP/1.1 503 ") && answer.contains("\"error\":\"overloaded\""), "\(answer)")
        #expect(admission.snapshot().queued == 0)
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.clientReceived().hasSuffix("\r\n\r\nok"))
        #expect(try proxy.received(by: upstream).isEmpty)  // neither waiter ever reached the upstream
        #expect(admission.snapshot().inFlight == 0)
    }
}
