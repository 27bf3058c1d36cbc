import Foundation
import GatehouseConfiguration
import GatehouseObservability
import NIOCore

/// The gateway's compiled tracing settings (`tracing:`): whose context it continues, which formats it sends
/// upstream, how it samples, and where sampled spans go.
public struct GatewayTracing: Sendable {
    public var incoming: TracingConfiguration.Incoming
    public var propagatesW3C: Bool
    public var propagatesB3: Bool
    public var propagatesB3Multi: Bool
    public var propagatesXRay: Bool
    public var sampler: TraceSampler
    /// Where the spans of sampled requests go (the OTLP exporter); nil: nowhere (context still propagates).
    public var sink: (any SpanSink)?

    /// `sampler` nil: parent-based with `configuration.sampleRatio`.
    public init(configuration: TracingConfiguration, sampler: TraceSampler? = nil, sink: (any SpanSink)? = nil) {
        incoming = configuration.incoming
        propagatesW3C = configuration.propagate.contains(.w3c)
        propagatesB3 = configuration.propagate.contains(.b3)
        propagatesB3Multi = configuration.propagate.contains(.b3multi)
        propagatesXRay = configuration.propagate.contains(.xray)
        self.sampler = sampler ?? .parentBasedRatio(configuration.sampleRatio)
        self.sink = sink
    }

    /// Defaults, nothing exported.
    public static let standard = GatewayTracing(configuration: .init())
}

/// How the request's token was settled (the span's `gatehouse.token.outcome`).
enum TokenOutcome: String {
    /// Vouched for by the token cache (or the connection's memo).
    case cacheHit = "cache_hit"
    /// Resolved by a call to the authorization server (exchange or introspection).
    case exchange
    /// Refused (missing, malformed, inactive, wrong audience or scope, or not checkable).
    case refused
}

/// One request's trace at the gateway: the server span (ids, parent, decision), the current upstream attempt's span,
/// the finished attempt spans (sampled requests only) and what the policies noted. Inline in `RequestContext`.
struct GatewayTrace {
    var request: RequestTrace
    /// The current upstream attempt's span (its id is the parent id upstream sees).
    var attemptSpanID: SpanID?
    var attemptStartedAt: NIODeadline?
    /// Ended attempts (sampled requests only: an unsampled request allocates no span).
    var attemptSpans: [FinishedSpan] = []
    var tokenOutcome: TokenOutcome?
    /// Further attributes of the server span (the hook for policy decisions: rate limit, breaker, admission).
    private(set) var decisions: [FinishedSpan.Attribute] = []

    /// Notes a policy's decision on the server span (e.g. `note("gatehouse.rate_limit", "allowed")`). Nothing is
    /// kept for an unsampled request, so the call costs no allocation there.
    mutating func note(_ key: String, _ value: String) {
        guard request.sampled else { return }
        decisions.append(.init(key, .string(value)))
    }

    /// Continues the request's context if its source is trusted (`tracing.incoming`), else starts a trace.
    static func begin(_ scan: RequestHeadScan, peerIsTrustedProxy: Bool, tracing: GatewayTracing, ids: inout TraceIDGenerator) -> GatewayTrace {
        let trusted: Bool
        switch tracing.incoming {
        case .trust: trusted = true
        case .trustedProxies: trusted = peerIsTrustedProxy
        case .ignore: trusted = false
        }
        let hasAny =
            scan.traceparent != nil || scan.b3 != nil || scan.b3TraceID != nil || scan.b3SpanID != nil || scan.b3Sampled != nil || scan.b3Flags != nil
            || scan.amznTraceID != nil
        let incoming =
            hasAny
            ? IncomingTraceContext.extract(
                traceparent: scan.traceparent, tracestate: scan.tracestate, b3: scan.b3, b3TraceID: scan.b3TraceID, b3SpanID: scan.b3SpanID,
                b3Sampled: scan.b3Sampled, b3Flags: scan.b3Flags, amznTraceID: scan.amznTraceID
            ) : nil
        // X-Ray wants the first four bytes of a trace id to be its start time: only when X-Ray ids are sent.
        let epoch = tracing.propagatesXRay ? UInt32(truncatingIfNeeded: Int(Date().timeIntervalSince1970)) : nil
        return GatewayTrace(request: RequestTrace.begin(incoming: incoming, trusted: trusted, sampler: tracing.sampler, ids: &ids, epochSeconds: epoch))
    }

    /// `traceresponse`, and `X-Amzn-Trace-Id` when the request carried one or X-Ray is propagated.
    func appendResponseHeaders(to additions: inout HeaderAdditions, tracing: GatewayTracing) {
        additions.append("traceresponse", request.traceResponse)
        if request.cameWithXRay || tracing.propagatesXRay {
            additions.append("X-Amzn-Trace-Id", XRayTraceHeader.format(traceID: request.traceID, parent: request.spanID, sampled: request.sampled, otherFields: nil))
        }
    }

    /// The trace headers of an upstream attempt, each with the same trace id and the attempt's span id.
    func upstreamHeaders(attempt: SpanID, tracing: GatewayTracing, _ body: (String, String) -> Void) {
        let sampled = request.sampled
        if tracing.propagatesW3C {
            body("traceparent", W3CTraceContext.format(traceID: request.traceID, spanID: attempt, sampled: sampled))
            if let state = request.traceState { body("tracestate", state) }
        }
        if tracing.propagatesB3 {
            body("b3", B3Propagation.single(traceID: request.traceID, spanID: attempt, sampled: sampled, parentSpanID: request.spanID))
        }
        if tracing.propagatesB3Multi {
            body("X-B3-TraceId", request.traceID.description)
            body("X-B3-SpanId", attempt.description)
            body("X-B3-ParentSpanId", request.spanID.description)
            body("X-B3-Sampled", sampled ? "1" : "0")
        }
        if tracing.propagatesXRay {
            body("X-Amzn-Trace-Id", XRayTraceHeader.format(traceID: request.traceID, parent: attempt, sampled: sampled, otherFields: request.xrayFields))
        }
    }

    /// Ends the current attempt's span (sampled requests only).
    mutating func endAttempt(target: TargetKey, method: String, status: Int?, error: String?, at now: NIODeadline) {
        guard let spanID = attemptSpanID, let startedAt = attemptStartedAt else { return }
        attemptSpanID = nil
        attemptStartedAt = nil
        guard request.sampled else { return }
        var attributes: [FinishedSpan.Attribute] = [
            .init("http.request.method", .string(method)), .init("server.address", .string(target.host)), .init("server.port", .int(Int64(target.port))),
            .init("gatehouse.upstream.target", .string(target.description)),
        ]
        if let status { attributes.append(.init("http.response.status_code", .int(Int64(status)))) }
        if let error { attributes.append(.init("error.type", .string(error))) }
        attemptSpans.append(
            FinishedSpan(
                traceID: request.traceID, spanID: spanID, parentSpanID: request.spanID, name: method, kind: .client,
                startUnixNanoseconds: UnixTime.nanoseconds(startedAt), endUnixNanoseconds: UnixTime.nanoseconds(now), attributes: attributes,
                errorMessage: error ?? (status.map { $0 >= 500 } == true ? "upstream answered \(status!)" : nil)
            )
        )
    }
}

/// What the tracing observer needs of a finished exchange beyond `ExchangeOutcome` (set only for sampled requests,
/// except the trace itself, which the access log reads for every request).
struct ExchangeTrace {
    var trace: GatewayTrace
    /// The normalized path, without the query.
    var path: String?
    var host: String?
    var clientID: String?
    var peerAddress: String?
}

/// Unix time of the monotonic clock's deadlines: the offset is read once (spans need wall-clock times; the data
/// path keeps only monotonic ones).
enum UnixTime {
    static let offset: Int64 = Int64(Date().timeIntervalSince1970 * 1_000_000_000) - Int64(NIODeadline.now().uptimeNanoseconds)

    static func nanoseconds(_ deadline: NIODeadline) -> UInt64 {
        UInt64(max(0, offset + Int64(deadline.uptimeNanoseconds)))
    }
}

extension ExchangeOutcome {
    /// The gateway's server span of this exchange (its attempts are in `trace.attemptSpans`).
    func serverSpan(_ record: ExchangeTrace) -> FinishedSpan {
        let trace = record.trace.request
        var attributes: [FinishedSpan.Attribute] = [
            .init("http.request.method", .string(method)), .init("http.response.status_code", .int(Int64(status))),
            .init("gatehouse.end_cause", .string(cause.traceLabel)), .init("gatehouse.attempts", .int(Int64(attempts))),
        ]
        if let path = record.path { attributes.append(.init("url.path", .string(path))) }
        if let route {
            attributes.append(.init("http.route", .string(route)))
            attributes.append(.init("gatehouse.route", .string(route)))
        }
        if let host = record.host { attributes.append(.init("server.address", .string(host))) }
        if let peer = record.peerAddress { attributes.append(.init("client.address", .string(peer))) }
        if let target { attributes.append(.init("gatehouse.upstream.target", .string(target.description))) }
        if let clientID = record.clientID { attributes.append(.init("gatehouse.client_id", .string(clientID))) }
        if let token = record.trace.tokenOutcome { attributes.append(.init("gatehouse.token.outcome", .string(token.rawValue))) }
        attributes.append(.init("gatehouse.request_id", .string(requestID)))
        attributes.append(contentsOf: record.trace.decisions)
        return FinishedSpan(
            traceID: trace.traceID, spanID: trace.spanID, parentSpanID: trace.parentSpanID, traceState: trace.traceState,
            name: route.map { "\(method) \($0)" } ?? method, kind: .server, startUnixNanoseconds: UnixTime.nanoseconds(receivedAt),
            endUnixNanoseconds: UnixTime.nanoseconds(endedAt), attributes: attributes,
            errorMessage: status >= 500 || status == 0 ? cause.traceLabel : nil
        )
    }
}

extension EndCause {
    /// A bounded label for spans (and logs).
    var traceLabel: String {
        switch self {
        case .completed: "completed"
        case .refused: "refused"
        case .rejected: "rejected"
        case .upstreamTimeout: "upstream_timeout"
        case .upstreamReset: "upstream_reset"
        case .connectFailed: "connect_failed"
        case .poolExhausted: "pool_exhausted"
        case .noHealthyTarget: "no_healthy_target"
        case .clientGone: "client_gone"
        case .tunnelled: "tunnelled"
        case .truncated: "truncated"
        }
    }
}
