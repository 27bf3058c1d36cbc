/// A span that has ended, as the exporter sends it: ids, name, kind, times (Unix nanoseconds), attributes and
/// whether it failed. Built once at the end of the work it describes, and only for sampled traces.
public struct FinishedSpan: Sendable {
    /// OTLP's `SpanKind` numbers.
    public enum Kind: UInt8, Sendable {
        case `internal` = 1, server = 2, client = 3
    }

    public enum AttributeValue: Sendable, Equatable {
        case string(String)
        case int(Int64)
        case double(Double)
        case bool(Bool)
    }

    public struct Attribute: Sendable, Equatable {
        public var key: String
        public var value: AttributeValue

        public init(_ key: String, _ value: AttributeValue) {
            self.key = key
            self.value = value
        }
    }

    public var traceID: TraceID
    public var spanID: SpanID
    public var parentSpanID: SpanID?
    public var traceState: String?
    public var name: String
    public var kind: Kind
    public var startUnixNanoseconds: UInt64
    public var endUnixNanoseconds: UInt64
    public var attributes: [Attribute]
    /// OTLP status `ERROR` (with this message) rather than `UNSET`.
    public var errorMessage: String?

    public init(
        traceID: TraceID, spanID: SpanID, parentSpanID: SpanID?, traceState: String? = nil, name: String, kind: Kind, startUnixNanoseconds: UInt64,
        endUnixNanoseconds: UInt64, attributes: [Attribute] = [], errorMessage: String? = nil
    ) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.name = name
        self.kind = kind
        self.startUnixNanoseconds = startUnixNanoseconds
        self.endUnixNanoseconds = endUnixNanoseconds
        self.attributes = attributes
        self.errorMessage = errorMessage
    }
}

/// Where finished spans go (the exporter's queue; a test's array).
public protocol SpanSink: Sendable {
    /// Takes a finished span without waiting: a full queue drops it.
    func record(_ span: FinishedSpan)
}
