import NIOCore

/// What the metrics and the access log measure of an exchange's upstream leg, kept inline in the exchange.
struct ExchangeMeasurements {
    /// When the current try started (its upstream duration runs to the response head).
    var attemptStartedAt: NIODeadline = .uptimeNanoseconds(0)
    /// A try started and its result was not reported yet.
    var attemptOpen = false
    /// The last finished try's duration, from its start to its response head or failure.
    var upstreamNanoseconds: Int64?
    /// Response body bytes relayed to the client.
    var bytesOut = 0
}

/// The per-attempt metrics, fed by the attempt hooks (`attemptStarted` / `attemptEnded` in `+Upstream`) and by the
/// one exit for a try that never reported (a per-try or total timeout).
extension DownstreamHandler {
    func measureAttemptStart(_ exchange: Exchange) {
        exchange.measurements.attemptStartedAt = clock.now()
        exchange.measurements.attemptOpen = true
    }

    func measureAttemptEnd(_ exchange: Exchange, _ result: AttemptResult, now: NIODeadline) {
        guard exchange.measurements.attemptOpen else { return }
        exchange.measurements.attemptOpen = false
        let elapsed = (now - exchange.measurements.attemptStartedAt).nanoseconds
        exchange.measurements.upstreamNanoseconds = elapsed
        let outcome: UpstreamOutcome
        switch result {
        case .response(let status): outcome = status >= 500 ? .serverError : .ok
        case .connectFailed: outcome = .connectError
        case .reset: outcome = .reset
        }
        record(exchange, outcome, nanoseconds: outcome == .connectError ? nil : elapsed)
    }

    /// The exchange ended with a try still open: a timeout counts as the try's outcome; a client that left (or a
    /// connection torn down) says nothing about the upstream and is not counted.
    func attemptAbandoned(_ exchange: Exchange, cause: EndCause) {
        exchange.measurements.attemptOpen = false
        guard cause == .upstreamTimeout else { return }
        let elapsed = (clock.now() - exchange.measurements.attemptStartedAt).nanoseconds
        exchange.measurements.upstreamNanoseconds = elapsed
        record(exchange, .timeout, nanoseconds: elapsed)
    }

    private func record(_ exchange: Exchange, _ outcome: UpstreamOutcome, nanoseconds: Int64?) {
        let cluster = exchange.route.cluster
        guard let target = cluster.targetMetricIndices[exchange.target] else { return }
        loop.metrics.recordAttempt(target: target, cluster: cluster.metricsIndex, outcome: outcome, nanoseconds: nanoseconds)
    }
}
