import Foundation
import NIOConcurrencyHelpers
import Tracing

/// The span context a `ServiceContext` carries: this process's current span, or a caller's (extracted).
public struct SpanContext: Sendable, Equatable {
    public var traceID: TraceID
    public var spanID: SpanID
    public var sampled: Bool
    public var traceState: String?
    /// Extracted from a request (the caller's span), not one of ours.
    public var isRemote: Bool

    public init(traceID: TraceID, spanID: SpanID, sampled: Bool, traceState: String? = nil, isRemote: Bool = false) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
        self.traceState = traceState
        self.isRemote = isRemote
    }
}

private enum SpanContextKey: ServiceContextKey {
    typealias Value = SpanContext
    static var nameOverride: String? { "gatehouse-span-context" }
}

extension ServiceContext {
    /// The span context Gatehouse's tracer keeps here.
    public var spanContext: SpanContext? {
        get { self[SpanContextKey.self] }
        set { self[SpanContextKey.self] = newValue }
    }
}

/// Gatehouse's `Tracer` for swift-distributed-tracing: W3C (then B3, then X-Ray) extraction, W3C injection,
/// parent-based sampling, and finished spans of sampled traces handed to a `SpanSink` (the OTLP exporter). Used
/// by the authorization server, the demo backend and the gateway's calls to the authorization server; the
/// gateway's per-request spans are built directly at its one exit (no span object per unsampled request).
public final class GatehouseTracer: Tracer, Sendable {
    public typealias Span = GatehouseSpan

    public let sampler: TraceSampler
    let sink: (any SpanSink)?
    private let ids = NIOLockedValueBox(TraceIDGenerator())

    /// `sink` nil: spans are sampled and propagated but go nowhere.
    public init(sampler: TraceSampler, sink: (any SpanSink)?) {
        self.sampler = sampler
        self.sink = sink
    }

    public func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant, function: String,
        file fileID: String, line: UInt
    ) -> GatehouseSpan {
        var context = context()
        let parent = context.spanContext
        let spanID = ids.withLockedValue { $0.nextSpanID() }
        let own: SpanContext
        if let parent {
            own = SpanContext(traceID: parent.traceID, spanID: spanID, sampled: parent.sampled, traceState: parent.traceState)
        } else {
            let traceID = ids.withLockedValue { $0.nextTraceID() }
            own = SpanContext(traceID: traceID, spanID: spanID, sampled: sampler.shouldSample(traceID, parent: nil))
        }
        context.spanContext = own
        return GatehouseSpan(
            name: operationName, kind: kind, context: context, spanContext: own, parentSpanID: parent?.spanID, start: instant().nanosecondsSinceEpoch,
            sink: own.sampled ? sink : nil
        )
    }

    public func forceFlush() {}

    // MARK: Instrument

    public func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        let incoming = IncomingTraceContext.extract(
            traceparent: extractor.extract(key: "traceparent", from: carrier), tracestate: extractor.extract(key: "tracestate", from: carrier),
            b3: extractor.extract(key: "b3", from: carrier), b3TraceID: extractor.extract(key: "x-b3-traceid", from: carrier),
            b3SpanID: extractor.extract(key: "x-b3-spanid", from: carrier), b3Sampled: extractor.extract(key: "x-b3-sampled", from: carrier),
            b3Flags: extractor.extract(key: "x-b3-flags", from: carrier), amznTraceID: extractor.extract(key: "x-amzn-trace-id", from: carrier)
        )
        guard let incoming, let traceID = incoming.traceID else { return }
        // A caller that named no span (an X-Ray root only) still gives the trace id: the span has no parent id.
        context.spanContext = SpanContext(
            traceID: traceID, spanID: incoming.parentSpanID ?? SpanID(0), sampled: sampler.shouldSample(traceID, parent: incoming.sampling),
            traceState: incoming.traceState, isRemote: true
        )
    }

    public func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        guard let span = context.spanContext, span.spanID.isValid else { return }
        injector.inject(W3CTraceContext.format(traceID: span.traceID, spanID: span.spanID, sampled: span.sampled), forKey: "traceparent", into: &carrier)
        if let state = span.traceState { injector.inject(state, forKey: "tracestate", into: &carrier) }
    }
}

/// A span of `GatehouseTracer`: mutable until it ends, then handed (once, if sampled) to the sink.
public final class GatehouseSpan: Tracing.Span, Sendable {
    private struct State {
        var name: String
        var attributes: SpanAttributes = [:]
        var errorMessage: String?
        var ended = false
    }

    public let context: ServiceContext
    public let spanContext: SpanContext
    let kind: SpanKind
    let parentSpanID: SpanID?
    let start: UInt64
    let sink: (any SpanSink)?
    private let state: NIOLockedValueBox<State>

    init(name: String, kind: SpanKind, context: ServiceContext, spanContext: SpanContext, parentSpanID: SpanID?, start: UInt64, sink: (any SpanSink)?) {
        self.context = context
        self.spanContext = spanContext
        self.kind = kind
        self.parentSpanID = parentSpanID.flatMap { $0.isValid ? $0 : nil }
        self.start = start
        self.sink = sink
        self.state = NIOLockedValueBox(State(name: name))
    }

    public var operationName: String {
        get { state.withLockedValue { $0.name } }
        set { state.withLockedValue { $0.name = newValue } }
    }

    public var attributes: SpanAttributes {
        get { state.withLockedValue { $0.attributes } }
        set { state.withLockedValue { $0.attributes = newValue } }
    }

    public var isRecording: Bool { sink != nil }

    public func setStatus(_ status: SpanStatus) {
        if status.code == .error { state.withLockedValue { $0.errorMessage = status.message ?? "error" } }
    }

    public func addEvent(_ event: SpanEvent) {}

    public func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        // The error's type, not its description: descriptions may quote what a client sent.
        state.withLockedValue { $0.errorMessage = $0.errorMessage ?? String(describing: type(of: error)) }
    }

    public func addLink(_ link: SpanLink) {}

    public func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        let finished = state.withLockedValue { state -> State? in
            guard !state.ended else { return nil }
            state.ended = true
            return state
        }
        guard let finished, let sink else { return }
        var attributes: [FinishedSpan.Attribute] = []
        finished.attributes.forEach { key, value in
            if let converted = Self.convert(value) { attributes.append(.init(key, converted)) }
        }
        sink.record(
            FinishedSpan(
                traceID: spanContext.traceID, spanID: spanContext.spanID, parentSpanID: parentSpanID, traceState: spanContext.traceState, name: finished.name,
                kind: Self.kind(kind), startUnixNanoseconds: start, endUnixNanoseconds: instant().nanosecondsSinceEpoch, attributes: attributes,
                errorMessage: finished.errorMessage
            )
        )
    }

    static func kind(_ kind: SpanKind) -> FinishedSpan.Kind {
        switch kind {
        case .server: .server
        case .client: .client
        default: .internal
        }
    }

    static func convert(_ value: SpanAttribute) -> FinishedSpan.AttributeValue? {
        switch value {
        case .int32(let number): .int(Int64(number))
        case .int64(let number): .int(number)
        case .double(let number): .double(number)
        case .bool(let flag): .bool(flag)
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(String(describing: convertible))
        default: nil
        }
    }
}

/// The server span of the request a task is serving, for handlers that add attributes to it (the token endpoint's
/// grant type and outcome). Set by the servers' tracing middleware.
public enum ActiveSpan {
    @TaskLocal public static var current: GatehouseSpan?
}

/// Reads trace headers from any header collection by a lookup closure (HTTPFields, NIO's HTTPHeaders, a
/// dictionary): lower-case names are asked for.
public struct HeaderLookupExtractor: Extractor {
    public typealias Carrier = @Sendable (String) -> String?

    public init() {}

    public func extract(key: String, from carrier: Carrier) -> String? { carrier(key) }
}
