import GatehouseConfiguration
import GatehouseObservability
import NIOCore
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// The gateway's side of trace context: the client's trace headers never cross, the gateway's are added per attempt,
/// and the trust rule for incoming contexts. (End to end, with the raw requests an upstream received:
/// Tests/interop/test_tracing.py.)
@Suite struct TracePropagationTests {
    let peer = HeaderHygiene.Peer(address: "198.51.100.7", isTrustedProxy: false, scheme: "http")
    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    func scan(_ pairs: [(String, String)]) -> RequestHeadScan {
        RequestHeadScan(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders(pairs)), maximumTargetLength: 8192)
    }

    @Test func theClientsTraceHeadersAreNotForwarded() {
        let client: [(String, String)] = [
            ("traceparent", Self.traceparent), ("TraceState", "a=1"), ("b3", "x"), ("X-B3-TraceId", "t"), ("X-B3-SpanId", "s"), ("X-B3-ParentSpanId", "p"),
            ("X-B3-Sampled", "1"), ("X-B3-Flags", "1"), ("X-Amzn-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793"), ("X-Kept", "yes"),
            ("X-Forwarded-Proto", "https"), ("traceresponse", "x"),
        ]
        var additions = HeaderAdditions()
        additions.append("traceparent", "ours")
        let headers = HeaderHygiene.requestHeaders(
            from: HTTPHeaders(client), peer: peer, requestID: "r", via: "1.1 gatehouse", isUpgrade: false, adding: additions
        )
        #expect(headers["traceparent"] == ["ours"])
        for name in ["tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-amzn-trace-id", "traceresponse"] {
            #expect(!headers.contains(name: name), "\(name) was forwarded")
        }
        #expect(headers["x-kept"] == ["yes"])
        #expect(headers["x-forwarded-proto"] == ["http"])  // still replaced for an untrusted peer
    }

    @Test func theUpstreamsTraceresponseIsReplaced() {
        var additions = HeaderAdditions()
        additions.append("traceresponse", "ours")
        let headers = HeaderHygiene.responseHeaders(
            from: HTTPHeaders([("traceresponse", "theirs"), ("X-Amzn-Trace-Id", "Root=theirs"), ("b3", "kept")]), via: "1.1 gatehouse", requestID: "r", isUpgrade: false,
            adding: additions
        )
        #expect(headers["traceresponse"] == ["ours"])
        #expect(!headers.contains(name: "x-amzn-trace-id"))
        #expect(headers["b3"] == ["kept"])
    }

    @Test func theScanFillsTheB3FlagsSlot() {
        #expect(scan([("X-B3-Flags", "1")]).b3Flags == "1")
    }

    @Test func trustDecidesWhoseContextIsContinued() {
        var ids = TraceIDGenerator(seed: (9, 8, 7, 6))
        let headers = scan([("traceparent", Self.traceparent)])
        func begin(_ incoming: TracingConfiguration.Incoming, trustedPeer: Bool) -> GatewayTrace {
            let tracing = GatewayTracing(configuration: .init(sampleRatio: 0, incoming: incoming))
            return GatewayTrace.begin(headers, peerIsTrustedProxy: trustedPeer, tracing: tracing, ids: &ids)
        }
        let trusted = begin(.trust, trustedPeer: false)
        #expect(trusted.request.traceID.description == "0af7651916cd43dd8448eb211c80319c" && trusted.request.sampled)
        let proxied = begin(.trustedProxies, trustedPeer: true)
        #expect(proxied.request.traceID == trusted.request.traceID)
        let untrusted = begin(.trustedProxies, trustedPeer: false)
        #expect(untrusted.request.traceID != trusted.request.traceID && !untrusted.request.sampled && untrusted.request.parentSpanID == nil)
        let ignored = begin(.ignore, trustedPeer: true)
        #expect(ignored.request.traceID != trusted.request.traceID)
    }

    @Test func everyPropagatedFormatCarriesTheAttemptsSpan() {
        var ids = TraceIDGenerator(seed: (1, 1, 1, 1))
        let tracing = GatewayTracing(configuration: .init(sampleRatio: 1, propagate: [.w3c, .b3, .b3multi, .xray]))
        let trace = GatewayTrace.begin(scan([("traceparent", Self.traceparent), ("tracestate", "congo=t61rcWkgMzE")]), peerIsTrustedProxy: false, tracing: tracing, ids: &ids)
        let attempt = SpanID(0x1111_2222_3333_4444)
        var sent: [String: String] = [:]
        trace.upstreamHeaders(attempt: attempt, tracing: tracing) { sent[$0] = $1 }
        let server = trace.request.spanID.description
        #expect(sent["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-1111222233334444-01")
        #expect(sent["tracestate"] == "congo=t61rcWkgMzE")
        #expect(sent["b3"] == "0af7651916cd43dd8448eb211c80319c-1111222233334444-1-\(server)")
        #expect(sent["X-B3-TraceId"] == "0af7651916cd43dd8448eb211c80319c" && sent["X-B3-SpanId"] == "1111222233334444" && sent["X-B3-ParentSpanId"] == server)
        #expect(sent["X-Amzn-Trace-Id"] == "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=1111222233334444;Sampled=1")
        var response = HeaderAdditions()
        trace.appendResponseHeaders(to: &response, tracing: tracing)
        var answered: [String: String] = [:]
        response.forEach { answered[$0] = $1 }
        #expect(answered["traceresponse"] == "00-0af7651916cd43dd8448eb211c80319c-\(server)-01")
        #expect(answered["X-Amzn-Trace-Id"]?.hasPrefix("Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=\(server)") == true)
    }

    @Test func anUnsampledRequestKeepsNoSpans() {
        var ids = TraceIDGenerator(seed: (1, 2, 1, 2))
        let tracing = GatewayTracing(configuration: .init(sampleRatio: 0))
        var trace = GatewayTrace.begin(scan([]), peerIsTrustedProxy: false, tracing: tracing, ids: &ids)
        #expect(!trace.request.sampled)
        trace.attemptSpanID = ids.nextSpanID()
        trace.attemptStartedAt = .now()
        trace.endAttempt(target: TargetKey(host: "127.0.0.1", port: 1), method: "GET", status: 200, error: nil, at: .now())
        #expect(trace.attemptSpans.isEmpty && trace.attemptSpanID == nil)
    }

    @Test func aSuspensionsWaitIsNotedByThePolicyThatHeldTheRequest() {
        var ids = TraceIDGenerator(seed: (1, 2, 1, 2))
        let tracing = GatewayTracing(configuration: .init(sampleRatio: 1))
        var trace = GatewayTrace.begin(scan([]), peerIsTrustedProxy: false, tracing: tracing, ids: &ids)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        // A token exchange's wait is the exchange's own client span, not a decision.
        trace.suspendedAt = start
        trace.endSuspension(.bearer, at: start + .milliseconds(3))
        #expect(trace.suspendedAt == nil && trace.rateLimitDelayNanoseconds == nil && trace.admissionWaitNanoseconds == nil)
        trace.suspendedAt = start + .milliseconds(10)
        trace.endSuspension(.rateLimit, at: start + .milliseconds(210))
        trace.suspendedAt = start + .milliseconds(300)
        trace.endSuspension(.admission, at: start + .milliseconds(345))
        #expect(trace.rateLimitDelayNanoseconds == 200_000_000 && trace.admissionWaitNanoseconds == 45_000_000)
        // Ended twice (resumed, then the exchange's end): the first end counts.
        trace.endSuspension(.admission, at: start + .milliseconds(900))
        #expect(trace.admissionWaitNanoseconds == 45_000_000)
        #expect(PolicyDecisions.milliseconds(45_000_000) == 45 && PolicyDecisions.name(.sheddable) == "sheddable")
    }
}
