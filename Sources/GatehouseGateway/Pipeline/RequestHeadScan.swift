import NIOHTTP1

/// Everything the data path needs from a request head, found in one pass over its fields (each name is classified
/// by its length first, so a field the gateway does not care about costs one integer compare).
///
/// The trace-context slots are filled here too, so that propagating `traceparent`, B3 or X-Ray needs no second scan.
struct RequestHeadScan {
    /// Name and value bytes plus separators, and the target: what `max_header_bytes` limits.
    var headerBytes = 0
    var host: String?
    var hostCount = 0
    var clientRequestID: String?
    /// The first `Content-Length` value; `contentLengthConflict` when another differs.
    var contentLengthValue: String?
    var contentLengthConflict = false
    var chunked = false
    /// `Upgrade` values, joined.
    var upgradeValue: String?
    /// Whether a `Connection` field lists `upgrade`.
    var connectionUpgrade = false
    /// A framing header or `Host` named by `Connection` (refused).
    var connectionNominates: String?
    var authorization: String?
    var authorizationCount = 0
    // Trace context (W3C, B3, AWS X-Ray): raw values, parsed by the tracing policy when it needs them.
    var traceparent: String?
    var tracestate: String?
    var b3: String?
    var b3TraceID: String?
    var b3SpanID: String?
    var b3Sampled: String?
    var b3Flags: String?
    var amznTraceID: String?

    init(_ head: HTTPRequestHead, maximumTargetLength: Int) {
        headerBytes = min(head.uri.utf8.count, maximumTargetLength) + 16
        for (name, value) in head.headers {
            headerBytes &+= name.utf8.count &+ value.utf8.count &+ 4
            switch name.utf8.count {
            case 2 where HeaderHygiene.equalsIgnoringCase(name, "b3"):
                b3 = value
            case 4 where HeaderHygiene.equalsIgnoringCase(name, "host"):
                hostCount += 1
                host = value
            case 7 where HeaderHygiene.equalsIgnoringCase(name, "upgrade"):
                upgradeValue = upgradeValue.map { $0 + ", " + value } ?? value
            case 10:
                if HeaderHygiene.equalsIgnoringCase(name, "connection") {
                    noteConnection(value)
                } else if HeaderHygiene.equalsIgnoringCase(name, "tracestate") {
                    tracestate = tracestate.map { $0 + "," + value } ?? value
                } else if HeaderHygiene.equalsIgnoringCase(name, "x-b3-flags") {
                    b3Flags = value
                }
            case 11:
                if HeaderHygiene.equalsIgnoringCase(name, "traceparent") {
                    traceparent = value
                } else if HeaderHygiene.equalsIgnoringCase(name, "x-b3-spanid") {
                    b3SpanID = value
                }
            case 12:
                if clientRequestID == nil && HeaderHygiene.equalsIgnoringCase(name, "x-request-id") {
                    clientRequestID = value
                } else if HeaderHygiene.equalsIgnoringCase(name, "x-b3-traceid") {
                    b3TraceID = value
                } else if HeaderHygiene.equalsIgnoringCase(name, "x-b3-sampled") {
                    b3Sampled = value
                }
            case 13 where HeaderHygiene.equalsIgnoringCase(name, "authorization"):
                authorizationCount += 1
                if authorization == nil { authorization = value }
            case 14 where HeaderHygiene.equalsIgnoringCase(name, "content-length"):
                if let first = contentLengthValue, first != value { contentLengthConflict = true }
                contentLengthValue = value
            case 15 where HeaderHygiene.equalsIgnoringCase(name, "x-amzn-trace-id"):
                amznTraceID = value
            case 17 where HeaderHygiene.equalsIgnoringCase(name, "transfer-encoding"):
                chunked = true
            default:
                break
            }
        }
    }

    private mutating func noteConnection(_ value: String) {
        if HeaderHygiene.equalsIgnoringCase(value, "keep-alive") || HeaderHygiene.equalsIgnoringCase(value, "close") { return }
        if HeaderHygiene.equalsIgnoringCase(value, "upgrade") {
            connectionUpgrade = true
            return
        }
        if connectionNominates == nil { connectionNominates = HeaderHygiene.forbiddenConnectionNomination(value) }
        if !connectionUpgrade {
            connectionUpgrade = HeaderHygiene.connectionTokens(value).contains { HeaderHygiene.equalsIgnoringCase($0, "upgrade") }
        }
    }

    /// The client asked to switch protocols (HTTP/1's parser stops after such a request either way).
    var requestsUpgrade: Bool { upgradeValue != nil && connectionUpgrade }
}
