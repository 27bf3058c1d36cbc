/// OTLP/protobuf encoding of spans (`ExportTraceServiceRequest`, opentelemetry-proto `trace/v1/trace.proto` and
/// `collector/trace/v1/trace_service.proto`), written by hand: the few messages and fields exporting needs, instead
/// of swift-otel and swift-protobuf (about 7 minutes more of a clean build per CI run).
public enum OTLPEncoding {
    /// One export request: one resource with `resource` attributes, one instrumentation scope, `spans`.
    public static func exportTraceServiceRequest(spans: [FinishedSpan], resource: [FinishedSpan.Attribute], scopeName: String) -> [UInt8] {
        var resourceMessage = ProtobufWriter()
        for attribute in resource { resourceMessage.message(1, keyValue(attribute)) }  // Resource.attributes

        var scope = ProtobufWriter()
        scope.string(1, scopeName)  // InstrumentationScope.name

        var scopeSpans = ProtobufWriter()
        scopeSpans.message(1, scope.bytes)  // ScopeSpans.scope
        for span in spans { scopeSpans.message(2, encode(span)) }  // ScopeSpans.spans

        var resourceSpans = ProtobufWriter()
        resourceSpans.message(1, resourceMessage.bytes)  // ResourceSpans.resource
        resourceSpans.message(2, scopeSpans.bytes)  // ResourceSpans.scope_spans

        var request = ProtobufWriter()
        request.message(1, resourceSpans.bytes)  // ExportTraceServiceRequest.resource_spans
        return request.bytes
    }

    static func encode(_ span: FinishedSpan) -> [UInt8] {
        var writer = ProtobufWriter()
        writer.bytesField(1, span.traceID.bytes)  // trace_id
        writer.bytesField(2, span.spanID.bytes)  // span_id
        if let traceState = span.traceState { writer.string(3, traceState) }  // trace_state
        if let parent = span.parentSpanID { writer.bytesField(4, parent.bytes) }  // parent_span_id
        writer.string(5, span.name)  // name
        writer.varintField(6, UInt64(span.kind.rawValue))  // kind
        writer.fixed64(7, span.startUnixNanoseconds)  // start_time_unix_nano
        writer.fixed64(8, span.endUnixNanoseconds)  // end_time_unix_nano
        for attribute in span.attributes { writer.message(9, keyValue(attribute)) }  // attributes
        if let message = span.errorMessage {
            var status = ProtobufWriter()
            status.string(2, message)  // Status.message
            status.varintField(3, 2)  // Status.code = STATUS_CODE_ERROR
            writer.message(15, status.bytes)  // status
        }
        return writer.bytes
    }

    static func keyValue(_ attribute: FinishedSpan.Attribute) -> [UInt8] {
        var value = ProtobufWriter()
        switch attribute.value {
        case .string(let text): value.string(1, text)  // AnyValue.string_value
        case .bool(let flag): value.varintField(2, flag ? 1 : 0)  // bool_value
        case .int(let number): value.varintField(3, UInt64(bitPattern: number))  // int_value
        case .double(let number): value.fixed64(4, number.bitPattern)  // double_value
        }
        var keyValue = ProtobufWriter()
        keyValue.string(1, attribute.key)  // KeyValue.key
        keyValue.message(2, value.bytes)  // KeyValue.value
        return keyValue.bytes
    }
}

/// The protobuf wire format's building blocks: varints, fixed 64-bit values and length-delimited fields.
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    /// Wire types: 0 varint, 1 64-bit, 2 length-delimited.
    mutating func tag(_ field: UInt64, wireType: UInt64) {
        varint(field << 3 | wireType)
    }

    mutating func varintField(_ field: UInt64, _ value: UInt64) {
        tag(field, wireType: 0)
        varint(value)
    }

    mutating func fixed64(_ field: UInt64, _ value: UInt64) {
        tag(field, wireType: 1)
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func bytesField(_ field: UInt64, _ value: [UInt8]) {
        tag(field, wireType: 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: UInt64, _ value: String) {
        bytesField(field, Array(value.utf8))
    }

    mutating func message(_ field: UInt64, _ encoded: [UInt8]) {
        bytesField(field, encoded)
    }
}
