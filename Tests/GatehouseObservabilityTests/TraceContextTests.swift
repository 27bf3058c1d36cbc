@testable import GatehouseObservability
import Testing

/// Examples and cases from W3C Trace Context Level 1/2 (the specification's examples and its test suite's
/// cases), Zipkin's b3-propagation README, and AWS X-Ray's tracing-header documentation.
@Suite struct W3CTraceContextTests {
    @Test func theSpecificationsExampleParses() throws {
        let parent = try #require(W3CTraceContext.parse(traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        #expect(parent.version == 0)
        #expect(parent.traceID.description == "0af7651916cd43dd8448eb211c80319c")
        #expect(parent.parentID.description == "b7ad6b7169203331")
        #expect(parent.flags == 1)
        let other = try #require(W3CTraceContext.parse(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"))
        #expect(other.flags == 0)
        #expect(W3CTraceContext.format(traceID: other.traceID, spanID: other.parentID, sampled: false) == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    }

    @Test(arguments: [
        // Version ff is forbidden; version 00 must be exactly 55 characters.
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-will-be-like",
        // All-zero ids.
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        // Bad lengths.
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        // Upper case and other characters outside lower-case hex.
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
        "0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0G",
        "00-0af7651916cd43dd8448eb211c8031.c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033z1-01",
        // Wrong delimiters.
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
        // A higher version continues only after a dash.
        "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01.what-the-future-will-not-be-like",
        "",
    ])
    func invalidTraceparentsAreRefused(_ value: String) {
        #expect(W3CTraceContext.parse(traceparent: value) == nil)
    }

    @Test func aHigherVersionIsReadByItsFirstFourFields() throws {
        let parent = try #require(W3CTraceContext.parse(traceparent: "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-will-be-like"))
        #expect(parent.version == 0xCC)
        #expect(parent.traceID.description == "0af7651916cd43dd8448eb211c80319c")
        #expect(parent.flags & 1 == 1)
        #expect(W3CTraceContext.parse(traceparent: "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09") != nil)
    }

    @Test func traceStateFollowsTheGrammar() {
        #expect(W3CTraceContext.validTraceState("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        #expect(W3CTraceContext.validTraceState("foo=1, bar@baz=2 ,,") != nil)
        #expect(W3CTraceContext.validTraceState("tenant1@system=x") != nil)
        #expect(W3CTraceContext.validTraceState("Foo=1") == nil)  // upper-case key
        #expect(W3CTraceContext.validTraceState("foo=1,foo=2") == nil)  // duplicate key
        #expect(W3CTraceContext.validTraceState("foo") == nil)
        #expect(W3CTraceContext.validTraceState("foo=a,b") == nil)
        #expect(W3CTraceContext.validTraceState("foo=bar ") != nil)  // whitespace around a member is not part of it
        #expect(W3CTraceContext.validTraceState("foo=") == nil)
        let thirtyTwo = (1...32).map { "k\($0)=v" }.joined(separator: ",")
        #expect(W3CTraceContext.validTraceState(thirtyTwo) == thirtyTwo)
        #expect(W3CTraceContext.validTraceState(thirtyTwo + ",k33=v") == nil)
    }
}

@Suite struct B3PropagationTests {
    @Test func theSingleHeaderExamplesParse() throws {
        // b3-propagation README: trace id, span id, sampled, parent span id.
        let full = try #require(B3Propagation.parse(single: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"))
        #expect(full.traceID?.description == "80f198ee56343ba864fe8b2a57d3eff7")
        #expect(full.parentSpanID?.description == "e457b5a2e4d86bd1")
        #expect(full.sampling == .sampled)
        // Debug implies sampled.
        #expect(B3Propagation.parse(single: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")?.sampling == .sampled)
        // No sampling state: deferred.
        #expect(B3Propagation.parse(single: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")?.sampling == .deferred)
        // A 64-bit trace id is left-padded to 128 bits.
        let short = try #require(B3Propagation.parse(single: "a3ce929d0e0e4736-00f067aa0ba902b7-0"))
        #expect(short.traceID?.description == "0000000000000000a3ce929d0e0e4736")
        #expect(short.sampling == .notSampled)
        // Deny only.
        let deny = try #require(B3Propagation.parse(single: "0"))
        #expect(deny.traceID == nil && deny.sampling == .notSampled)
    }

    @Test(arguments: [
        "1", "d", "80f198ee56343ba864fe8b2a57d3eff7", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
        "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1", "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1",
        "00000000000000000000000000000000-e457b5a2e4d86bd1-1", "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
    ])
    func invalidSingleHeadersAreRefused(_ value: String) {
        #expect(B3Propagation.parse(single: value) == nil)
    }

    @Test func theMultipleHeadersParse() throws {
        let context = try #require(B3Propagation.parse(traceID: "80f198ee56343ba864fe8b2a57d3eff7", spanID: "e457b5a2e4d86bd1", sampled: "1", flags: nil))
        #expect(context.traceID?.description == "80f198ee56343ba864fe8b2a57d3eff7")
        #expect(context.parentSpanID?.description == "e457b5a2e4d86bd1")
        #expect(context.sampling == .sampled)
        #expect(B3Propagation.parse(traceID: "80f198ee56343ba864fe8b2a57d3eff7", spanID: "e457b5a2e4d86bd1", sampled: nil, flags: "1")?.sampling == .sampled)
        #expect(B3Propagation.parse(traceID: "80f198ee56343ba864fe8b2a57d3eff7", spanID: "e457b5a2e4d86bd1", sampled: "0", flags: nil)?.sampling == .notSampled)
        #expect(B3Propagation.parse(traceID: "80f198ee56343ba864fe8b2a57d3eff7", spanID: nil, sampled: "1", flags: nil) == nil)
        #expect(B3Propagation.parse(traceID: nil, spanID: nil, sampled: "0", flags: nil)?.traceID == nil)
        #expect(B3Propagation.parse(traceID: "xyz", spanID: "e457b5a2e4d86bd1", sampled: "1", flags: nil) == nil)
    }

    @Test func theSingleHeaderIsFormatted() {
        let trace = TraceID(high: 0x80f1_98ee_5634_3ba8, low: 0x64fe_8b2a_57d3_eff7)
        #expect(B3Propagation.single(traceID: trace, spanID: SpanID(0xe457_b5a2_e4d8_6bd1), sampled: true, parentSpanID: SpanID(0x05e3_ac9a_4f6e_3b90))
            == "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
    }
}

@Suite struct XRayTraceHeaderTests {
    @Test func theDocumentedExamplesParse() throws {
        // AWS X-Ray developer guide, "Tracing header".
        let full = try #require(XRayTraceHeader.parse("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"))
        #expect(full.traceID?.description == "5759e988bd862e3fe1be46a994272793")
        #expect(full.parentSpanID?.description == "53995c3f42cd8ad8")
        #expect(full.sampling == .sampled)
        // What a load balancer adds: only the root.
        let root = try #require(XRayTraceHeader.parse("Root=1-67891233-abcdef012345678912345678"))
        #expect(root.parentSpanID == nil && root.sampling == .deferred)
        // Any order, unknown fields kept, Self dropped.
        let shuffled = try #require(XRayTraceHeader.parse("Sampled=0; Lineage=a87bd80c:1|68fd508a:5 ;Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793"))
        #expect(shuffled.sampling == .notSampled)
        #expect(shuffled.xrayFields == "Lineage=a87bd80c:1|68fd508a:5")
        #expect(XRayTraceHeader.format(traceID: full.traceID!, parent: SpanID(0x5399_5c3f_42cd_8ad8), sampled: true, otherFields: nil)
            == "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
    }

    @Test(arguments: [
        "Parent=53995c3f42cd8ad8;Sampled=1", "Root=2-5759e988-bd862e3fe1be46a994272793", "Root=1-5759e98-bd862e3fe1be46a994272793",
        "Root=1-5759E988-bd862e3fe1be46a994272793", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad", "Root=1-00000000-000000000000000000000000",
    ])
    func invalidHeadersAreRefused(_ value: String) {
        #expect(XRayTraceHeader.parse(value) == nil)
    }
}

@Suite struct TraceContextChoiceTests {
    static let w3c = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    @Test func w3cWinsThenB3ThenXRay() {
        let all = IncomingTraceContext.extract(
            traceparent: Self.w3c, tracestate: "a=b", b3: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", b3TraceID: nil, b3SpanID: nil, b3Sampled: nil,
            amznTraceID: "Root=1-5759e988-bd862e3fe1be46a994272793"
        )
        #expect(all?.format == .w3c && all?.traceState == "a=b")
        let invalidW3C = IncomingTraceContext.extract(
            traceparent: "00-zz", tracestate: nil, b3: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", b3TraceID: nil, b3SpanID: nil, b3Sampled: nil, amznTraceID: nil
        )
        #expect(invalidW3C?.format == .b3)
        let multi = IncomingTraceContext.extract(
            traceparent: nil, tracestate: nil, b3: nil, b3TraceID: "80f198ee56343ba864fe8b2a57d3eff7", b3SpanID: "e457b5a2e4d86bd1", b3Sampled: "1",
            amznTraceID: "Root=1-5759e988-bd862e3fe1be46a994272793"
        )
        #expect(multi?.format == .b3)
        let xray = IncomingTraceContext.extract(
            traceparent: nil, tracestate: nil, b3: nil, b3TraceID: nil, b3SpanID: nil, b3Sampled: nil, amznTraceID: "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
        )
        #expect(xray?.format == .xray && xray?.sampling == .sampled)
        #expect(IncomingTraceContext.extract(traceparent: "x", tracestate: nil, b3: "y", b3TraceID: nil, b3SpanID: nil, b3Sampled: nil, amznTraceID: "z") == nil)
    }

    @Test func aTrustedContextIsContinuedAndAnUntrustedOneReplaced() throws {
        var ids = TraceIDGenerator(seed: (1, 2, 3, 4))
        let incoming = try #require(
            IncomingTraceContext.extract(traceparent: Self.w3c, tracestate: nil, b3: nil, b3TraceID: nil, b3SpanID: nil, b3Sampled: nil, amznTraceID: nil)
        )
        let never = TraceSampler.parentBasedRatio(0)
        let continued = RequestTrace.begin(incoming: incoming, trusted: true, sampler: never, ids: &ids)
        #expect(continued.traceID.description == "0af7651916cd43dd8448eb211c80319c")
        #expect(continued.parentSpanID?.description == "b7ad6b7169203331")
        #expect(continued.sampled)  // the trusted parent's decision
        #expect(continued.spanID != continued.parentSpanID)
        let replaced = RequestTrace.begin(incoming: incoming, trusted: false, sampler: never, ids: &ids)
        #expect(replaced.traceID != continued.traceID)
        #expect(replaced.parentSpanID == nil)
        #expect(!replaced.sampled)  // the untrusted sampled flag forces nothing
        #expect(replaced.traceResponse.hasSuffix("-00"))
    }

    @Test func samplersFollowTheirNames() {
        let id = TraceID(high: 1, low: 0x0000_0000_0000_0001)
        let high = TraceID(high: 1, low: 0x00FF_FFFF_FFFF_FFFF)
        #expect(TraceSampler(otelName: "always_on", argument: nil)?.shouldSample(id, parent: .notSampled) == true)
        #expect(TraceSampler(otelName: "always_off", argument: nil)?.shouldSample(id, parent: .sampled) == false)
        #expect(TraceSampler(otelName: "parentbased_always_off", argument: nil)?.shouldSample(id, parent: .sampled) == true)
        #expect(TraceSampler(otelName: "parentbased_always_on", argument: nil)?.shouldSample(id, parent: .notSampled) == false)
        #expect(TraceSampler(otelName: "traceidratio", argument: "0.5")?.shouldSample(id, parent: nil) == true)
        #expect(TraceSampler(otelName: "traceidratio", argument: "0.5")?.shouldSample(high, parent: nil) == false)
        #expect(TraceSampler(otelName: "parentbased_traceidratio", argument: "0.5")?.shouldSample(high, parent: .deferred) == false)
        #expect(TraceSampler(otelName: "jaeger_remote", argument: nil) == nil)
        // About the ratio asked for, over many generated ids.
        var ids = TraceIDGenerator(seed: (5, 6, 7, 8))
        let sampler = TraceSampler.parentBasedRatio(0.25)
        let sampled = (0..<20_000).filter { _ in sampler.shouldSample(ids.nextTraceID(), parent: nil) }.count
        #expect((4_500...5_500).contains(sampled))
    }

    @Test func generatedIdsAreValidAndDistinct() {
        var ids = TraceIDGenerator()
        let spans = (0..<10_000).map { _ in ids.nextSpanID() }
        #expect(Set(spans).count == spans.count && spans.allSatisfy(\.isValid))
        let xray = ids.nextTraceID(epochSeconds: 0x5759_e988)
        #expect(xray.description.hasPrefix("5759e988"))
    }
}
