import GatehouseObservability
import NIOCore

/// The gateway's metrics on one event loop: plain integers in `LoopState`, indexed by the label indices compiled
/// into routes and clusters (`MetricLabels`). Nothing here locks or allocates per request; the scrape copies each
/// loop's values on that loop (`LoopStates.collect`) and sums them.
///
/// Why the scrape hops onto each loop (`eventLoop.submit`) rather than reading a snapshot each loop publishes per
/// tick: a scrape comes every few seconds, a tick every 100 ms on every loop; hopping costs one task per loop per
/// scrape and gives exact values, publishing would copy every array ten times a second for nobody.
struct GatewayLoopMetrics {
    static let statusClasses = 6
    static let methods = MethodLabel.allCases.count

    /// `gatehouse_gateway_requests_total`: `(route * methods + method) * 6 + status class` (class 0: nothing sent).
    var requests = LoopCounters()
    /// `gatehouse_gateway_request_duration_seconds` by route index.
    var requestDurations = LoopHistograms(buckets: .requestDuration)
    /// `gatehouse_gateway_upstream_requests_total`: `target * outcomes + outcome`.
    var upstreamRequests = LoopCounters()
    /// `gatehouse_gateway_upstream_duration_seconds` by cluster index: from a try's start to its response head.
    var upstreamDurations = LoopHistograms(buckets: .requestDuration)
    /// `gatehouse_gateway_rate_limited_total` by `MetricLabels.rateLimit(route:limit:)` index (fed by the rate-limit
    /// policy: `loop.metrics.rateLimited.add(index)`).
    var rateLimited = LoopCounters()
    /// `gatehouse_gateway_shed_total`: `cluster * 3 + Priority.rawValue` (fed by the admission queue).
    var shed = LoopCounters()
    /// `gatehouse_gateway_admission_queue_depth` by cluster index: this loop's queue length, set by the admission
    /// queue when it changes (`admissionQueueDepth.set(cluster, depth)`; summed over loops).
    var admissionQueueDepth = LoopCounters()
    /// `gatehouse_gateway_circuit_breaker_state` by route index: 0 closed, 1 half-open, 2 open, set by the breaker
    /// (`circuitBreakerState.set(route.metricsIndex, state)`; the scrape reports the highest over the loops).
    var circuitBreakerState = LoopCounters()
    /// `gatehouse_gateway_event_loop_lag_seconds`: how late the loop's last tick ran, in nanoseconds.
    var eventLoopLagNanoseconds: Int64 = 0

    /// The `metrics` observer: one finished exchange.
    mutating func record(_ outcome: ExchangeOutcome) {
        let statusClass = min(max(outcome.status / 100, 0), 5)
        requests.add((outcome.routeIndex * Self.methods + outcome.methodLabel.rawValue) * Self.statusClasses + statusClass)
        requestDurations.observe(outcome.routeIndex, nanoseconds: (outcome.endedAt - outcome.receivedAt).nanoseconds)
    }

    /// One upstream try.
    mutating func recordAttempt(target: Int, cluster: Int, outcome: UpstreamOutcome, nanoseconds: Int64?) {
        upstreamRequests.add(target * UpstreamOutcome.allCases.count + outcome.rawValue)
        if let nanoseconds { upstreamDurations.observe(cluster, nanoseconds: nanoseconds) }
    }

    /// A copy sharing no storage with the loop's arrays.
    func snapshot() -> GatewayLoopMetrics {
        var copy = self
        copy.requests = requests.snapshot()
        copy.requestDurations = requestDurations.snapshot()
        copy.upstreamRequests = upstreamRequests.snapshot()
        copy.upstreamDurations = upstreamDurations.snapshot()
        copy.rateLimited = rateLimited.snapshot()
        copy.shed = shed.snapshot()
        copy.admissionQueueDepth = admissionQueueDepth.snapshot()
        copy.circuitBreakerState = circuitBreakerState.snapshot()
        return copy
    }

    /// Adds another loop's values (gauges: depth summed, breaker state and lag the highest).
    mutating func add(_ other: GatewayLoopMetrics) {
        requests.add(other.requests)
        requestDurations.add(other.requestDurations)
        upstreamRequests.add(other.upstreamRequests)
        upstreamDurations.add(other.upstreamDurations)
        rateLimited.add(other.rateLimited)
        shed.add(other.shed)
        admissionQueueDepth.add(other.admissionQueueDepth)
        for index in other.circuitBreakerState.values.indices where other.circuitBreakerState[index] > circuitBreakerState[index] {
            circuitBreakerState.set(index, other.circuitBreakerState[index])
        }
        eventLoopLagNanoseconds = max(eventLoopLagNanoseconds, other.eventLoopLagNanoseconds)
    }
}

/// What a scrape reads from one loop besides its counters.
struct LoopScrape: Sendable {
    var metrics: GatewayLoopMetricsBox
    /// Exchanges in progress on the loop's connections.
    var inFlight: Int
    /// Per target: (open, idle) upstream connections of the loop's pool.
    var pool: [TargetKey: (open: Int, idle: Int)]
}

/// `GatewayLoopMetrics` crossing from a loop to the scrape (a copy that shares nothing with the loop).
struct GatewayLoopMetricsBox: @unchecked Sendable {
    var value: GatewayLoopMetrics
}
