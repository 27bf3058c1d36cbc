/// Which new traces are recorded, by OpenTelemetry's sampler names (`OTEL_TRACES_SAMPLER`): `always_on`,
/// `always_off`, `traceidratio`, and their `parentbased_` forms (which follow a propagated decision and use the
/// root sampler only for traces that start here or carry none).
public struct TraceSampler: Sendable, Equatable {
    public enum Root: Sendable, Equatable {
        case alwaysOn
        case alwaysOff
        /// The share of trace ids sampled (0…1), decided from the trace id so that every hop decides alike.
        case ratio(Double)
    }

    public var root: Root
    public var parentBased: Bool

    public init(root: Root, parentBased: Bool = true) {
        self.root = root
        self.parentBased = parentBased
    }

    /// Parent-based with a ratio: Gatehouse's default (`tracing.sample_ratio`).
    public static func parentBasedRatio(_ ratio: Double) -> TraceSampler { TraceSampler(root: .ratio(ratio), parentBased: true) }

    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; nil for a name this does not know.
    public init?(otelName: String, argument: String?) {
        let ratio = argument.flatMap(Double.init).map { min(max($0, 0), 1) } ?? 1.0
        switch otelName.lowercased() {
        case "always_on": self.init(root: .alwaysOn, parentBased: false)
        case "always_off": self.init(root: .alwaysOff, parentBased: false)
        case "traceidratio": self.init(root: .ratio(ratio), parentBased: false)
        case "parentbased_always_on": self.init(root: .alwaysOn)
        case "parentbased_always_off": self.init(root: .alwaysOff)
        case "parentbased_traceidratio": self.init(root: .ratio(ratio))
        default: return nil
        }
    }

    /// Whether a span of `traceID` is recorded; `parent`: the decision a trusted caller propagated (nil: none).
    public func shouldSample(_ traceID: TraceID, parent: SamplingState?) -> Bool {
        if parentBased, let parent, parent != .deferred { return parent == .sampled }
        switch root {
        case .alwaysOn: return true
        case .alwaysOff: return false
        case .ratio(let ratio): return Self.ratioSamples(traceID, ratio)
        }
    }

    /// OpenTelemetry's TraceIdRatioBased, on the trace id's last 56 bits (random in W3C Trace Context Level 2 ids).
    static func ratioSamples(_ traceID: TraceID, _ ratio: Double) -> Bool {
        if ratio >= 1 { return true }
        if ratio <= 0 { return false }
        let threshold = UInt64(ratio * Double(1 << 56))
        return traceID.low & 0x00FF_FFFF_FFFF_FFFF < threshold
    }
}

/// The trace one request belongs to at a server: the trace id (continued or new), the server span's id, its parent
/// (the caller's span, if continued), and the sampling decision. Trace ids travel whether sampled or not.
public struct RequestTrace: Sendable, Equatable {
    public var traceID: TraceID
    /// The server span's id (the parent of every call this server makes for the request).
    public var spanID: SpanID
    public var parentSpanID: SpanID?
    public var sampled: Bool
    /// The W3C `tracestate` to pass on.
    public var traceState: String?
    /// Whether the request carried an `X-Amzn-Trace-Id` (the response then carries one with the same root).
    public var cameWithXRay: Bool
    /// X-Ray fields to pass on beyond root, parent and sampling.
    public var xrayFields: String?

    public init(
        traceID: TraceID, spanID: SpanID, parentSpanID: SpanID?, sampled: Bool, traceState: String? = nil, cameWithXRay: Bool = false, xrayFields: String? = nil
    ) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.sampled = sampled
        self.traceState = traceState
        self.cameWithXRay = cameWithXRay
        self.xrayFields = xrayFields
    }

    /// Continues `incoming` when given and trusted, else starts a trace. An untrusted context is not continued at
    /// all (its ids and its sampled flag are replaced), so it can neither force sampling nor pick our ids.
    public static func begin(
        incoming: IncomingTraceContext?, trusted: Bool, sampler: TraceSampler, ids: inout TraceIDGenerator, epochSeconds: UInt32? = nil
    ) -> RequestTrace {
        let spanID = ids.nextSpanID()
        let cameWithXRay = incoming?.format == .xray
        if trusted, let incoming {
            if let traceID = incoming.traceID {
                return RequestTrace(
                    traceID: traceID, spanID: spanID, parentSpanID: incoming.parentSpanID, sampled: sampler.shouldSample(traceID, parent: incoming.sampling),
                    traceState: incoming.traceState, cameWithXRay: cameWithXRay, xrayFields: incoming.xrayFields
                )
            }
            // A B3 denial without ids: a new trace, with the caller's decision.
            let traceID = ids.nextTraceID(epochSeconds: epochSeconds)
            return RequestTrace(traceID: traceID, spanID: spanID, parentSpanID: nil, sampled: sampler.shouldSample(traceID, parent: incoming.sampling))
        }
        let traceID = ids.nextTraceID(epochSeconds: epochSeconds)
        return RequestTrace(traceID: traceID, spanID: spanID, parentSpanID: nil, sampled: sampler.shouldSample(traceID, parent: nil), cameWithXRay: cameWithXRay)
    }

    /// `traceresponse` (W3C Trace Context Level 2): this server's span for the request.
    public var traceResponse: String { W3CTraceContext.format(traceID: traceID, spanID: spanID, sampled: sampled) }
}
