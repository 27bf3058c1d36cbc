import Foundation
import GatehouseConfiguration
import GatehouseObservability
import GatehousePolicies
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
    /// Refused: missing, malformed, inactive, wrong audience or scope (401, 400 or 403).
    case refused
    /// Not checkable now (the authorization server unreachable or too many checks under way): 503, fail closed.
    case unavailable
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
    /// When a policy suspended the request (sampled requests only): the wait becomes a span attribute.
    var suspendedAt: NIODeadline?
    /// How long the rate limit held the request back (`max_delay` shaping), and how long it waited in its cluster's
    /// admission queue (sampled requests only).
    var rateLimitDelayNanoseconds: Int64?
    var admissionWaitNanoseconds: Int64?

    /// A suspended policy resumed (or the exchange ended while suspended): its wait is noted.
    mutating func endSuspension(_ kind: PolicyKind, at now: NIODeadline) {
        guard let since = suspendedAt else { return }
        suspendedAt = nil
        let waited = (now - since).nanoseconds
        switch kind {
        case .rateLimit: rateLimitDelayNanoseconds = waited
        case .admission: admissionWaitNanoseconds = waited
        case .bearer, .priority, .circuitBreaker: break
        }
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
    /// What the route's fault-tolerance policies decided.
    var decisions: PolicyDecisions?
}

/// The fault-tolerance policies' decisions on one request, as its server span reports them. Read from the request
/// context at the one exit, for sampled requests only (an unsampled request pays nothing for them: the policies
/// set the same few enum fields whether traced or not, for the access log and the admin views).
///
/// Attributes (absent when the route has no such policy, or the request ended before it ran):
/// - `gatehouse.rate_limit.decision`: `allowed`, `delayed` (held back by `max_delay` shaping) or `limited` (429);
///   `gatehouse.rate_limit.limit`: the name of the limit that refused it; `gatehouse.rate_limit.delay_ms`: the
///   time it was held back.
/// - `gatehouse.circuit_breaker.decision`: `closed`, `trial` (a half-open trial) or `open` (answered without the
///   upstream); `gatehouse.circuit_breaker.fallback`: true when the route's fallback answered.
/// - `gatehouse.admission.decision`: `admitted` (a slot at once), `queued` (a slot after waiting, or still waiting
///   when the request ended) or `shed` (503 `overloaded`: the queue full, displaced, or its timeout passed);
///   `gatehouse.admission.wait_ms`: the time spent in the queue; `gatehouse.priority`: the request's class.
struct PolicyDecisions {
    var limit: LimitOutcome
    var limitedBy: String?
    var rateLimitDelayNanoseconds: Int64?
    var breaker: BreakerOutcome
    var breakerFallback: Bool
    var admission: AdmissionOutcome
    var admissionWaitNanoseconds: Int64?
    var priority: PriorityClass

    init(_ context: RequestContext, trace: GatewayTrace) {
        limit = context.limitOutcome
        limitedBy = context.limitedBy
        rateLimitDelayNanoseconds = trace.rateLimitDelayNanoseconds
        breaker = context.breakerOutcome
        breakerFallback = context.breakerOutcome == .open && context.route.breaker?.fallback != nil
        // A request that waited for its slot was queued, whatever came of the wait (the context says `admitted`
        // once the slot is granted).
        admission = context.admissionOutcome == .admitted && trace.admissionWaitNanoseconds != nil ? .queued : context.admissionOutcome
        admissionWaitNanoseconds = trace.admissionWaitNanoseconds
        priority = context.priority
    }

    func append(to attributes: inout [FinishedSpan.Attribute]) {
        if limit != .none {
            attributes.append(.init("gatehouse.rate_limit.decision", .string(limit.rawValue)))
            if let limitedBy { attributes.append(.init("gatehouse.rate_limit.limit", .string(limitedBy))) }
            if let delay = rateLimitDelayNanoseconds { attributes.append(.init("gatehouse.rate_limit.delay_ms", .double(Self.milliseconds(delay)))) }
        }
        if breaker != .none {
            attributes.append(.init("gatehouse.circuit_breaker.decision", .string(breaker.rawValue)))
            if breakerFallback { attributes.append(.init("gatehouse.circuit_breaker.fallback", .bool(true))) }
        }
        if admission != .none {
            attributes.append(.init("gatehouse.admission.decision", .string(admission.rawValue)))
            if let wait = admissionWaitNanoseconds { attributes.append(.init("gatehouse.admission.wait_ms", .double(Self.milliseconds(wait)))) }
            attributes.append(.init("gatehouse.priority", .string(Self.name(priority))))
        }
    }

    static func milliseconds(_ nanoseconds: Int64) -> Double { Double(max(nanoseconds, 0)) / 1_000_000 }

    static func name(_ priority: PriorityClass) -> String {
        switch priority {
        case .sheddable: "sheddable"
        case .normal: "normal"
        case .critical: "critical"
        }
    }
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
        record.decisions?.append(to: &attributes)
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
