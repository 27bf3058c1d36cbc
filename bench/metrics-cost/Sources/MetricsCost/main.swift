import Metrics
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

// One "request" = the four updates the gateway makes per proxied request: requests_total{route,method,code},
// request_duration_seconds{route}, upstream_requests_total{cluster,target,outcome}, upstream_duration_seconds{cluster}.
// Label values cycle over 8 routes so that nothing is a single cached handle by accident.

let iterations = 2_000_000
let routes = (0..<8).map { "route-\($0)" }
let factory = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())
MetricsSystem.bootstrap(factory)

func measure(_ name: String, _ body: (Int) -> Void) {
    for index in 0..<10_000 { body(index) }  // warm-up: registries filled, caches made
    let start = ContinuousClock.now
    for index in 0..<iterations { body(index) }
    let elapsed = ContinuousClock.now - start
    let (seconds, attoseconds) = elapsed.components
    let nanoseconds = Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    let perRequest = (nanoseconds / Double(iterations) * 10).rounded() / 10
    print(name + String(repeating: " ", count: max(1, 60 - name.count)) + "\(perRequest) ns/request")
}

// swift-metrics as an observer would use it with labels that vary per request: make the handle, then update it
// (the factory looks the series up in its registry, under a lock).
measure("swift-metrics + swift-prometheus, handles per request") { index in
    let route = routes[index & 7]
    Counter(label: "gatehouse_gateway_requests_total", dimensions: [("route", route), ("method", "GET"), ("code", "2xx")]).increment()
    Metrics.Timer(label: "gatehouse_gateway_request_duration_seconds", dimensions: [("route", route)]).recordNanoseconds(Int64(400_000 + index & 0xffff))
    Counter(label: "gatehouse_gateway_upstream_requests_total", dimensions: [("cluster", "c"), ("target", "127.0.0.1:8081"), ("outcome", "ok")]).increment()
    Metrics.Timer(label: "gatehouse_gateway_upstream_duration_seconds", dimensions: [("cluster", "c")]).recordNanoseconds(Int64(300_000 + index & 0xffff))
}

// The best case for swift-metrics: every handle made once (label sets known in advance, as compiled indices).
let counters = routes.map { Counter(label: "gatehouse_gateway_requests_total", dimensions: [("route", $0), ("method", "GET"), ("code", "2xx")]) }
let timers = routes.map { Metrics.Timer(label: "gatehouse_gateway_request_duration_seconds", dimensions: [("route", $0)]) }
let upstreamCounter = Counter(label: "gatehouse_gateway_upstream_requests_total", dimensions: [("cluster", "c"), ("target", "127.0.0.1:8081"), ("outcome", "ok")])
let upstreamTimer = Metrics.Timer(label: "gatehouse_gateway_upstream_duration_seconds", dimensions: [("cluster", "c")])
measure("swift-metrics + swift-prometheus, handles made once") { index in
    counters[index & 7].increment()
    timers[index & 7].recordNanoseconds(Int64(400_000 + index & 0xffff))
    upstreamCounter.increment()
    upstreamTimer.recordNanoseconds(Int64(300_000 + index & 0xffff))
}

// Gatehouse: per-loop arrays indexed by compiled label indices (GatehouseObservability/Metrics/LoopCounters.swift).
var requests = LoopCounters()
var durations = LoopHistograms(buckets: .requestDuration)
var upstream = LoopCounters()
var upstreamDurations = LoopHistograms(buckets: .requestDuration)
measure("per-loop arrays (Gatehouse)") { index in
    let route = index & 7
    requests.add((route * 10 + 0) * 6 + 2)
    durations.observe(route, nanoseconds: Int64(400_000 + index & 0xffff))
    upstream.add(0)
    upstreamDurations.observe(0, nanoseconds: Int64(300_000 + index & 0xffff))
}
precondition(requests.values.reduce(0, +) == iterations + 10_000 && durations.count(0) > 0)
