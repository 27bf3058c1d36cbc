import GatehouseObservability

/// The authorization server's access-log line: the gateway's shape (`GatehouseObservability.AccessLogLine`), with
/// the endpoint as `route`. The path never carries its query (authorization codes and tokens travel there), and no
/// header or body value is written.
enum AuthAccessLog {
    static func write(
        to writer: AccessLogWriter, requestID: String, trace: (traceID: String, spanID: String), endpoint: AuthMetrics.Endpoint, method: String, path: String,
        status: Int, bytesIn: Int, bytesOut: Int, nanoseconds: Int64
    ) {
        var line = AccessLogLine(service: "gatehouse-auth", requestID: requestID, traceID: trace.traceID, spanID: trace.spanID)
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

extension AuthAccessLog {
    /// The line's `trace_id` and `span_id`: the request's trace, and the authorization server's server span of the
    /// request (`span`, made by the tracing middleware or the fast path, still open while the line is written).
    ///
    /// `span_id` names only a span that is exported — a line's span can always be found in the trace store — so it
    /// is empty when the request was not sampled or no exporter is configured (then there is no span). `trace_id`
    /// is written whenever the trace is known: the span's, else the caller's context read from the headers by
    /// `lookup` (lower-case names), so the line joins the gateway's line of the same trace even without export.
    static func traceIdentifiers(span: GatehouseSpan?, lookup: (String) -> String?) -> (traceID: String, spanID: String) {
        if let span {
            let context = span.spanContext
            return (context.traceID.description, span.isRecording ? context.spanID.description : "")
        }
        let incoming = IncomingTraceContext.extract(
            traceparent: lookup("traceparent"), tracestate: nil, b3: lookup("b3"), b3TraceID: lookup("x-b3-traceid"), b3SpanID: lookup("x-b3-spanid"),
            b3Sampled: lookup("x-b3-sampled"), b3Flags: lookup("x-b3-flags"), amznTraceID: lookup("x-amzn-trace-id")
        )
        return (incoming?.traceID?.description ?? "", "")
    }
}
