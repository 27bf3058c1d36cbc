/// The sampling decision a propagated context carries.
public enum SamplingState: Sendable, Equatable {
    case sampled
    case notSampled
    /// No decision carried (B3 without a sampling state, X-Ray `Sampled=?` or none): the receiver decides.
    case deferred
}

/// A trace context received with a request, in whichever format it came.
public struct IncomingTraceContext: Sendable, Equatable {
    public enum Format: String, Sendable {
        case w3c, b3, xray
    }

    public var format: Format
    /// Nil only for a B3 deny-only header (`b3: 0`): a sampling decision without a trace.
    public var traceID: TraceID?
    /// The caller's span (nil: none named, e.g. an X-Ray header with only a `Root`).
    public var parentSpanID: SpanID?
    public var sampling: SamplingState
    /// The W3C `tracestate`, when valid (passed through unchanged).
    public var traceState: String?
    /// X-Ray fields other than `Root`, `Parent` and `Sampled`, passed on as they came (`Lineage=…`).
    public var xrayFields: String?

    public init(
        format: Format, traceID: TraceID?, parentSpanID: SpanID?, sampling: SamplingState, traceState: String? = nil, xrayFields: String? = nil
    ) {
        self.format = format
        self.traceID = traceID
        self.parentSpanID = parentSpanID
        self.sampling = sampling
        self.traceState = traceState
        self.xrayFields = xrayFields
    }

    /// The first valid context among the request's headers: W3C, else B3 (single, then multiple headers), else
    /// X-Ray. An invalid header of one format does not hide a valid one of the next.
    public static func extract(
        traceparent: String?, tracestate: String?, b3: String?, b3TraceID: String?, b3SpanID: String?, b3Sampled: String?, b3Flags: String? = nil,
        amznTraceID: String?
    ) -> IncomingTraceContext? {
        if let traceparent, let parsed = W3CTraceContext.parse(traceparent: traceparent) {
            return IncomingTraceContext(
                format: .w3c, traceID: parsed.traceID, parentSpanID: parsed.parentID, sampling: parsed.flags & 1 == 1 ? .sampled : .notSampled,
                traceState: tracestate.flatMap(W3CTraceContext.validTraceState)
            )
        }
        if let b3, let parsed = B3Propagation.parse(single: b3) { return parsed }
        if b3TraceID != nil || b3SpanID != nil || b3Sampled != nil || b3Flags != nil,
            let parsed = B3Propagation.parse(traceID: b3TraceID, spanID: b3SpanID, sampled: b3Sampled, flags: b3Flags)
        {
            return parsed
        }
        if let amznTraceID, let parsed = XRayTraceHeader.parse(amznTraceID) { return parsed }
        return nil
    }
}

/// W3C Trace Context (Level 1 and 2): `traceparent`, `tracestate` and the `traceresponse` response header.
public enum W3CTraceContext {
    /// The parts of a valid `traceparent`.
    public struct Parent: Sendable, Equatable {
        public var version: UInt8
        public var traceID: TraceID
        public var parentID: SpanID
        public var flags: UInt8
    }

    /// Parses `traceparent` (or `traceresponse`, same grammar): `version-traceid-parentid-flags`, lower-case hex.
    /// Version `00` is exactly 55 characters; a higher version (not `ff`) is read by its first four fields and may
    /// continue after a `-` (the specification's forward compatibility). All-zero ids are invalid.
    public static func parse(traceparent value: String) -> Parent? {
        var value = value
        return value.withUTF8 { bytes -> Parent? in
            guard bytes.count >= 55 else { return nil }
            guard let version = Hex.parse(bytes[0..<2], count: 2), version != 0xFF else { return nil }
            if version == 0 {
                guard bytes.count == 55 else { return nil }
            } else if bytes.count > 55 {
                guard bytes[55] == UInt8(ascii: "-") else { return nil }
            }
            guard bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-") else { return nil }
            guard let traceID = Hex.parseTraceID(bytes[3..<35]), traceID.isValid,
                let parent = Hex.parse(bytes[36..<52], count: 16), parent != 0,
                let flags = Hex.parse(bytes[53..<55], count: 2)
            else { return nil }
            return Parent(version: UInt8(version), traceID: traceID, parentID: SpanID(parent), flags: UInt8(flags))
        }
    }

    /// `00-<trace id>-<span id>-<flags>` (what `traceparent` and `traceresponse` carry).
    public static func format(traceID: TraceID, spanID: SpanID, sampled: Bool) -> String {
        // One allocation (the gateway writes two of these per request): the digits go straight into the string.
        String(unsafeUninitializedCapacity: 55) { buffer in
            buffer[0] = UInt8(ascii: "0")
            buffer[1] = UInt8(ascii: "0")
            buffer[2] = UInt8(ascii: "-")
            Hex.write(traceID.high, into: buffer, at: 3)
            Hex.write(traceID.low, into: buffer, at: 19)
            buffer[35] = UInt8(ascii: "-")
            Hex.write(spanID.value, into: buffer, at: 36)
            buffer[52] = UInt8(ascii: "-")
            buffer[53] = UInt8(ascii: "0")
            buffer[54] = sampled ? UInt8(ascii: "1") : UInt8(ascii: "0")
            return 55
        }
    }

    /// The maximum of list members a `tracestate` may have.
    public static let maximumTraceStateMembers = 32

    /// `value` when it is a valid `tracestate` (at most 32 list members, each `key=value` by the specification's
    /// grammar, no key twice; empty members and whitespace around members allowed); nil otherwise, and then it is
    /// not propagated.
    public static func validTraceState(_ value: String) -> String? {
        var keys: [Substring] = []
        for rawMember in value.split(separator: ",", omittingEmptySubsequences: false) {
            let text = rawMember.trimmingSpaces
            if text.isEmpty { continue }
            guard let equals = text.firstIndex(of: "=") else { return nil }
            let key = text[..<equals]
            let memberValue = text[text.index(after: equals)...]
            guard validKey(key), validValue(memberValue), !keys.contains(key) else { return nil }
            keys.append(key)
            if keys.count > maximumTraceStateMembers { return nil }
        }
        return keys.isEmpty ? nil : value
    }

    private static func isKeyCharacter(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "*") || byte == UInt8(ascii: "/")
    }

    private static func isLowerAlpha(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") }
    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// `simple-key = lcalpha 0*255(keychar)`, or `tenant-id "@" system-id` (`(lcalpha / DIGIT) 0*240(keychar)` and
    /// `lcalpha 0*13(keychar)`).
    static func validKey(_ key: Substring) -> Bool {
        let bytes = Array(key.utf8)
        if let at = bytes.firstIndex(of: UInt8(ascii: "@")) {
            let tenant = bytes[..<at]
            let system = bytes[(at + 1)...]
            guard let first = tenant.first, isLowerAlpha(first) || isDigit(first), tenant.count <= 241, tenant.allSatisfy(isKeyCharacter) else { return false }
            guard let systemFirst = system.first, isLowerAlpha(systemFirst), system.count <= 14, system.allSatisfy(isKeyCharacter) else { return false }
            return true
        }
        guard let first = bytes.first, isLowerAlpha(first), bytes.count <= 256 else { return false }
        return bytes.allSatisfy(isKeyCharacter)
    }

    /// `value = 0*255(chr) nblk-chr`: printable ASCII except `,` and `=`, not ending in a space, at most 256.
    static func validValue(_ value: Substring) -> Bool {
        let bytes = Array(value.utf8)
        guard let last = bytes.last, last != 0x20, bytes.count <= 256 else { return false }
        return bytes.allSatisfy { $0 >= 0x20 && $0 <= 0x7E && $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: "=") }
    }
}

/// Zipkin's B3 propagation: the single `b3` header and the `X-B3-*` headers.
public enum B3Propagation {
    /// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or a bare sampling state (`0` to deny; `1` or
    /// `d` alone are not valid contexts and are ignored). Trace ids are 16 or 32 lower-case hex digits.
    public static func parse(single value: String) -> IncomingTraceContext? {
        if value == "0" { return IncomingTraceContext(format: .b3, traceID: nil, parentSpanID: nil, sampling: .notSampled) }
        let fields = value.utf8.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
        guard fields.count >= 2, fields.count <= 4 else { return nil }
        guard let traceID = Hex.parseTraceID(fields[0]), traceID.isValid, let span = Hex.parse(fields[1], count: 16), span != 0 else { return nil }
        var sampling = SamplingState.deferred
        if fields.count >= 3 {
            switch Array(fields[2]) {
            case [UInt8(ascii: "1")], [UInt8(ascii: "d")]: sampling = .sampled
            case [UInt8(ascii: "0")]: sampling = .notSampled
            default: return nil
            }
        }
        if fields.count == 4 {
            guard let parent = Hex.parse(fields[3], count: 16), parent != 0 else { return nil }
        }
        return IncomingTraceContext(format: .b3, traceID: traceID, parentSpanID: SpanID(span), sampling: sampling)
    }

    /// The multiple-header form: `X-B3-TraceId` and `X-B3-SpanId` (both, or neither with only a sampling
    /// decision), `X-B3-Sampled` (`1`/`0`, and the legacy `true`/`false`), `X-B3-Flags: 1` (debug: sampled).
    public static func parse(traceID: String?, spanID: String?, sampled: String?, flags: String?) -> IncomingTraceContext? {
        var sampling = SamplingState.deferred
        switch sampled {
        case "1", "true": sampling = .sampled
        case "0", "false": sampling = .notSampled
        case nil: break
        default: return nil
        }
        if flags == "1" { sampling = .sampled }
        guard let traceID, let spanID else {
            // A decision without ids: only a denial means something to continue (a new trace, not sampled).
            return traceID == nil && spanID == nil && sampling == .notSampled
                ? IncomingTraceContext(format: .b3, traceID: nil, parentSpanID: nil, sampling: .notSampled) : nil
        }
        guard let trace = Hex.parseTraceID(traceID.utf8), trace.isValid, let span = Hex.parse(spanID.utf8, count: 16), span != 0 else { return nil }
        return IncomingTraceContext(format: .b3, traceID: trace, parentSpanID: SpanID(span), sampling: sampling)
    }

    /// `{TraceId}-{SpanId}-{1|0}[-{ParentSpanId}]`.
    public static func single(traceID: TraceID, spanID: SpanID, sampled: Bool, parentSpanID: SpanID?) -> String {
        var value = traceID.description + "-" + spanID.description + (sampled ? "-1" : "-0")
        if let parentSpanID { value += "-" + parentSpanID.description }
        return value
    }
}

/// AWS X-Ray's `X-Amzn-Trace-Id`: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1` (fields in any order;
/// others kept).
public enum XRayTraceHeader {
    public static func parse(_ value: String) -> IncomingTraceContext? {
        var traceID: TraceID?
        var parent: SpanID?
        var sampling = SamplingState.deferred
        var others: [Substring] = []
        for rawField in value.split(separator: ";") {
            let field = rawField.trimmingSpaces
            guard let equals = field.firstIndex(of: "=") else { continue }
            let key = field[..<equals]
            let fieldValue = field[field.index(after: equals)...]
            switch key {
            case "Root":
                guard traceID == nil, let id = parseRoot(fieldValue) else { return nil }
                traceID = id
            case "Parent":
                guard let id = Hex.parse(fieldValue.utf8, count: 16), id != 0 else { return nil }
                parent = SpanID(id)
            case "Sampled":
                switch fieldValue {
                case "1": sampling = .sampled
                case "0": sampling = .notSampled
                default: sampling = .deferred  // `?`: the caller asks the receiver to decide
                }
            case "Self":
                continue  // a load balancer's own segment: not ours to pass on
            default:
                others.append(field)
            }
        }
        guard let traceID else { return nil }
        return IncomingTraceContext(
            format: .xray, traceID: traceID, parentSpanID: parent, sampling: sampling, xrayFields: others.isEmpty ? nil : others.joined(separator: ";")
        )
    }

    /// `1-<8 hex>-<24 hex>` as the 32-digit trace id.
    static func parseRoot(_ root: Substring) -> TraceID? {
        let bytes = Array(root.utf8)
        guard bytes.count == 35, bytes[0] == UInt8(ascii: "1"), bytes[1] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "-") else { return nil }
        guard let id = Hex.parseTraceID(bytes[2..<10] + bytes[11..<35]), id.isValid else { return nil }
        return id
    }

    /// `Root=1-<8 hex>-<24 hex>`.
    public static func root(_ traceID: TraceID) -> String {
        let hex = traceID.description
        let split = hex.index(hex.startIndex, offsetBy: 8)
        return "Root=1-" + hex[..<split] + "-" + hex[split...]
    }

    /// The header value: root, parent, sampling decision, then the other fields received.
    public static func format(traceID: TraceID, parent: SpanID?, sampled: Bool, otherFields: String?) -> String {
        var value = root(traceID)
        if let parent { value += ";Parent=" + parent.description }
        value += sampled ? ";Sampled=1" : ";Sampled=0"
        if let otherFields { value += ";" + otherFields }
        return value
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var slice = self
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}
