import GatehouseObservability
import NIOHTTP1

/// The trace a request to a Swift backend belongs to, read in one call from its headers by the gateway's rules:
/// W3C `traceparent`/`tracestate` (what the gateway sends by default), else B3 (`b3`, `X-B3-*`), else
/// `X-Amzn-Trace-Id`. Invalid headers read as absent. Put `traceID` in logs; make your server span a child of
/// `parentSpanID`.
public struct IncomingTrace: Sendable, Equatable {
    /// 32 lower-case hex digits.
    public var traceID: String
    /// The caller's span (the gateway's upstream attempt): 16 lower-case hex digits; nil when none was named.
    public var parentSpanID: String?
    /// The caller's sampling decision; nil when it left the decision to the receiver.
    public var sampled: Bool?
    /// The W3C `tracestate` to pass on, when valid.
    public var traceState: String?

    /// Reads the trace headers through `header` (asked for lower-case names); nil when none is valid.
    public static func extract(_ header: (String) -> String?) -> IncomingTrace? {
        guard
            let context = IncomingTraceContext.extract(
                traceparent: header("traceparent"), tracestate: header("tracestate"), b3: header("b3"), b3TraceID: header("x-b3-traceid"),
                b3SpanID: header("x-b3-spanid"), b3Sampled: header("x-b3-sampled"), b3Flags: header("x-b3-flags"), amznTraceID: header("x-amzn-trace-id")
            ), let traceID = context.traceID
        else { return nil }
        let sampled: Bool? =
            switch context.sampling {
            case .sampled: true
            case .notSampled: false
            case .deferred: nil
            }
        return IncomingTrace(traceID: traceID.description, parentSpanID: context.parentSpanID?.description, sampled: sampled, traceState: context.traceState)
    }

    /// Reads the trace headers of a NIO request head.
    public static func extract(from headers: HTTPHeaders) -> IncomingTrace? {
        extract { headers.first(name: $0) }
    }
}
