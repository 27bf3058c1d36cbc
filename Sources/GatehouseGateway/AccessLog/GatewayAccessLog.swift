import GatehouseObservability
import NIOCore

/// The gateway's access log: one JSON line per finished exchange, built at the one exit (the `accessLog`
/// observer) into the loop's buffer, which the ticker hands to the writer thread — no write(2) on an event loop.
///
/// Fields: `time`, `service`, `request_id`, `trace_id`, `span_id`, `route` (`-` before routing), `method`, `path`
/// (normalized, without the query), `status` (0 when nothing was sent), `bytes_in`, `bytes_out` (body bytes
/// relayed from the upstream), `duration_ms`, `upstream` (the last target tried), `upstream_duration_ms` (the last
/// try, to its response head), `attempts`, `client_id`, `token` (`none`, `valid`, `refused`), `policy` (the
/// rate-limit, breaker or admission decision when one refused or delayed the request), `cause` (`completed`, or
/// why the gateway answered itself). Never a header value: no token, cookie or `Authorization` can reach it.
extension LoopState {
    func logAccess(_ outcome: ExchangeOutcome) {
        guard let writer = accessLogWriter else { return }
        let exchange = outcome.exchange
        var line: AccessLogLine
        if let request = outcome.trace?.trace.request {
            // The request's trace id and the gateway's server span id (the ones `traceresponse` carries), written as
            // hex straight into the line; every request has them, sampled or not.
            line = AccessLogLine(service: "gatehouse-gateway", requestID: outcome.requestID, trace: request.traceID, span: request.spanID, reusing: &accessLogLineStorage)
        } else {
            line = AccessLogLine(service: "gatehouse-gateway", requestID: outcome.requestID, reusing: &accessLogLineStorage)
        }
        line.field("route", outcome.route ?? "-")
        line.field("method", outcome.method)
        line.field("path", exchange?.context.admitted.target.path ?? "-")
        line.field("status", outcome.status)
        line.field("bytes_in", outcome.bytesIn)
        line.field("bytes_out", exchange?.measurements.bytesOut ?? 0)
        line.milliseconds("duration_ms", nanoseconds: (outcome.endedAt - outcome.receivedAt).nanoseconds)
        if let target = outcome.target { line.field("upstream", host: target.host, port: target.port) } else { line.field("upstream", "") }
        if let upstream = exchange?.measurements.upstreamNanoseconds { line.milliseconds("upstream_duration_ms", nanoseconds: upstream) }
        line.field("attempts", outcome.attempts)
        line.field("client_id", exchange?.context.identity?.clientID ?? "")
        line.field("token", GatewayAccessLog.tokenOutcome(outcome))
        line.field("policy", GatewayAccessLog.policyOutcome(outcome))
        line.field("cause", GatewayAccessLog.causeName(outcome.cause))
        line.finish()
        accessLog.append(line, to: writer)
        line.recycle(into: &accessLogLineStorage)
    }

    /// Run at the end of every tick: the loop's lag, and the access-log lines of the last tick to the writer.
    func tickObservability() {
        let now = NIODeadline.now()
        if let lastTickEnd {
            metrics.eventLoopLagNanoseconds = max(0, (now - lastTickEnd - Self.tickInterval).nanoseconds)
        }
        lastTickEnd = now
        if let accessLogWriter { accessLog.handOver(to: accessLogWriter) }
    }

    /// Hands the buffered lines over now (graceful shutdown, before the writer closes).
    func flushAccessLog() {
        if let accessLogWriter { accessLog.handOver(to: accessLogWriter) }
    }
}

enum GatewayAccessLog {
    /// `none` (the route takes no token, or the request never got that far), `valid`, or `refused`.
    static func tokenOutcome(_ outcome: ExchangeOutcome) -> String {
        if case .rejected(by: .bearer) = outcome.cause { return "refused" }
        guard let exchange = outcome.exchange, exchange.route.auth != nil else { return "none" }
        return exchange.context.identity == nil ? "none" : "valid"
    }

    /// The rate-limit, circuit-breaker or admission decision that refused the request; empty when none did. (The
    /// policies name themselves through `EndCause.rejected(by:)`; the bearer check is reported under `token`.)
    static func policyOutcome(_ outcome: ExchangeOutcome) -> String {
        if case .rejected(by: let kind) = outcome.cause, kind != .bearer { return kind.rawValue }
        return ""
    }

    /// The span's cause label (`EndCause.traceLabel`, the one table of names), with the policy that rejected.
    static func causeName(_ cause: EndCause) -> String {
        if case .rejected(by: let kind) = cause { return "rejected_\(kind.rawValue)" }
        return cause.traceLabel
    }
}
