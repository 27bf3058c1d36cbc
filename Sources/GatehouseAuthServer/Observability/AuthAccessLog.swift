import GatehouseObservability

/// The authorization server's access-log line: the gateway's shape (`GatehouseObservability.AccessLogLine`), with
/// the endpoint as `route`. The path never carries its query (authorization codes and tokens travel there), and no
/// header or body value is written.
enum AuthAccessLog {
    static func write(
        to writer: AccessLogWriter, requestID: String, endpoint: AuthMetrics.Endpoint, method: String, path: String, status: Int, bytesIn: Int, bytesOut: Int,
        nanoseconds: Int64
    ) {
        // `trace_id` and `span_id` stay empty here: the line is written by the outermost middleware, after the tracing
        // middleware's server span has ended (and spans exist only while exporting). The gateway's lines carry them.
        var line = AccessLogLine(service: "gatehouse-auth", requestID: requestID)
        line.field("route", endpoint.name)
        line.field("method", method)
        // Only known endpoints' paths: anything else (a probe, a typo carrying a secret) is logged as its label.
        line.field("path", endpoint == .other ? "-" : path)
        line.field("status", status)
        line.field("bytes_in", bytesIn)
        line.field("bytes_out", bytesOut)
        line.milliseconds("duration_ms", nanoseconds: nanoseconds)
        line.field("upstream", "")
        line.field("attempts", 0)
        line.field("client_id", "")
        line.field("token", "")
        line.field("policy", "")
        line.field("cause", status >= 400 ? "error" : "completed")
        line.finish()
        writer.append(line)
    }
}
