import GatehouseConfiguration
import NIOHPACK
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// Issue 10's header rules, checked on the builders directly; the same rules are read off the raw bytes an upstream
/// received in Tests/interop/test_gateway_framing.py and test_gateway_h2_framing.py.
@Suite struct RequestHygieneTests {
    let untrusted = HeaderHygiene.Peer(address: "198.51.100.7", isTrustedProxy: false, scheme: "http")
    let trusted = HeaderHygiene.Peer(address: "127.0.0.1", isTrustedProxy: true, scheme: "http")

    func build(_ pairs: [(String, String)], peer: HeaderHygiene.Peer, filter: UntrustedHeaderFilter = .standard, host: String? = nil) -> HTTPHeaders {
        HeaderHygiene.requestHeaders(from: HTTPHeaders(pairs), peer: peer, requestID: "r", via: "1.1 gatehouse", isUpgrade: false, filter: filter, host: host)
    }

    // MARK: Connection nominations

    @Test(arguments: ["content-length", "Content-Length", "keep-alive, transfer-encoding", " Host ", "close,TRANSFER-ENCODING"])
    func framingAndHostNominationsAreFound(value: String) {
        #expect(HeaderHygiene.forbiddenConnectionNomination(value) != nil)
    }

    @Test(arguments: ["keep-alive", "close", "Upgrade", "x-internal, keep-alive", "X-Forwarded-For", "content-lengthx"])
    func otherNominationsAreNot(value: String) {
        #expect(HeaderHygiene.forbiddenConnectionNomination(value) == nil)
    }

    @Test func theClientsContentLengthIsNeverCopied() {
        let headers = build([("Host", "a"), ("Content-Length", "5"), ("X-Keep", "1")], peer: untrusted)
        #expect(!headers.contains(name: "content-length"))
        #expect(headers["x-keep"] == ["1"])
    }

    @Test func aNominationCannotRemoveWhatTheGatewayManages() {
        let headers = build(
            [("Host", "a"), ("Connection", "X-Forwarded-Proto, X-Forwarded-Host, Via, X-Request-Id, X-Forwarded-For"), ("X-Forwarded-Proto", "https"),
             ("X-Forwarded-Host", "front.example"), ("X-Other", "1"), ("Connection", "x-other")],
            peer: trusted
        )
        #expect(headers["x-forwarded-proto"] == ["https"])
        #expect(headers["x-forwarded-host"] == ["front.example"])
        #expect(headers["via"] == ["1.1 gatehouse"])
        #expect(headers["x-request-id"] == ["r"])
        #expect(headers["x-forwarded-for"] == ["127.0.0.1"])
        #expect(!headers.contains(name: "x-other"))  // an ordinary nomination still works
    }

    // MARK: Untrusted headers

    @Test func defaultListIsStrippedFromUntrustedPeersOnly() {
        let spoofed = ["X-Real-IP", "True-Client-IP", "X-Client-IP", "X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-HTTP-Method-Override"]
        let pairs = [("Host", "a"), ("X-Keep", "yes")] + spoofed.map { ($0, "spoofed") }
        let fromClient = build(pairs, peer: untrusted)
        #expect(fromClient["x-keep"] == ["yes"])
        for name in spoofed { #expect(!fromClient.contains(name: name), "\(name)") }
        let fromProxy = build(pairs, peer: trusted)
        for name in spoofed { #expect(fromProxy[name] == ["spoofed"], "\(name)") }
    }

    @Test func underscoreLookAlikesAreDroppedFromEveryone() {
        let pairs = [("Host", "a"), ("X_Forwarded_For", "10.0.0.1"), ("x_real_ip", "10.0.0.2"), ("X_REQUEST_ID", "forged"), ("Content_Length", "9"), ("X_My_Header", "kept")]
        for peer in [untrusted, trusted] {
            let headers = build(pairs, peer: peer)
            #expect(!headers.contains(name: "x_forwarded_for"))
            #expect(!headers.contains(name: "x_real_ip"))
            #expect(!headers.contains(name: "x_request_id"))
            #expect(!headers.contains(name: "content_length"))
            #expect(headers["x_my_header"] == ["kept"])
        }
    }

    @Test func theListAndTheUnderscoreModeAreConfigurable() throws {
        var hygiene = GatewayConfiguration.RequestHygiene()
        hygiene.stripFromUntrusted = ["x-tenant"]
        hygiene.underscoreHeaders = .drop
        let filter = UntrustedHeaderFilter(hygiene)
        let headers = build([("Host", "a"), ("X-Tenant", "t"), ("X-Real-IP", "1.2.3.4"), ("X_Anything", "1")], peer: untrusted, filter: filter)
        #expect(!headers.contains(name: "x-tenant"))
        #expect(!headers.contains(name: "x_anything"))
        #expect(headers["x-real-ip"] == ["1.2.3.4"])
        hygiene.underscoreHeaders = .keep
        let keeping = build([("Host", "a"), ("X_Forwarded_For", "1")], peer: untrusted, filter: UntrustedHeaderFilter(hygiene))
        #expect(keeping["x_forwarded_for"] == ["1"])
    }

    @Test func hopByHopIncludesHTTP2Settings() {
        let headers = build([("Host", "a"), ("HTTP2-Settings", "AAMAAABkAAQAAP__"), ("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")], peer: untrusted)
        #expect(!headers.contains(name: "http2-settings"))
        #expect(!headers.contains(name: "upgrade"))
        #expect(!headers.contains(name: "connection"))
    }

    @Test func anAbsoluteFormAuthorityReplacesHost() {
        let headers = build([("Host", "other.example")], peer: untrusted, host: "api.example")
        #expect(headers["host"] == ["api.example"])
        #expect(headers["x-forwarded-host"] == ["api.example"])
    }

    // MARK: Trailers

    @Test func trailersKeepOnlyWhatATrailerMayCarry() {
        let trailers = HTTPHeaders([
            ("X-Checksum", "abc"), ("Authorization", "Bearer t"), ("Cookie", "s=1"), ("Content-Length", "9"), ("Transfer-Encoding", "chunked"),
            ("Host", "evil"), ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-Whatever", "x"), ("Forwarded", "for=x"), ("Via", "x"),
            ("X-Request-Id", "forged"), ("X-Real-IP", "1.2.3.4"), ("X_Forwarded_For", "x"), ("X-Gateway-JWT", "forged"), ("Connection", "close"),
        ])
        let kept = HeaderHygiene.requestTrailers(trailers, peer: untrusted, removing: ["x-gateway-jwt"], filter: .standard)
        #expect(kept.map { Array($0).map(\.name) } == ["X-Checksum"])
        #expect(HeaderHygiene.requestTrailers(HTTPHeaders([("Authorization", "x")]), peer: untrusted, removing: [], filter: .standard) == nil)
    }

    // MARK: Upstream framing

    @Test func framingIsDecidedFromWhatIsForwarded() {
        let h1 = HTTPVersion.http1_1
        let h2 = HTTPVersion(major: 2, minor: 0)
        #expect(UpstreamFraming.decide(version: h1, contentLength: nil, chunked: true) == .chunked)
        #expect(UpstreamFraming.decide(version: h1, contentLength: 12, chunked: false) == .contentLength(12))
        #expect(UpstreamFraming.decide(version: h1, contentLength: 0, chunked: false) == .none)
        #expect(UpstreamFraming.decide(version: h1, contentLength: nil, chunked: false) == .none)
        #expect(UpstreamFraming.decide(version: h2, contentLength: nil, chunked: false) == .undecided)
        #expect(UpstreamFraming.decide(version: h2, contentLength: 3, chunked: false) == .contentLength(3))
        var post = HTTPHeaders()
        UpstreamFraming.none.apply(to: &post, method: .POST)
        #expect(post["content-length"] == ["0"])
        var get = HTTPHeaders()
        UpstreamFraming.none.apply(to: &get, method: .GET)
        #expect(get.isEmpty)
        var chunked = HTTPHeaders()
        UpstreamFraming.chunked.apply(to: &chunked, method: .GET)
        #expect(chunked["transfer-encoding"] == ["chunked"])
    }

    // MARK: HTTP/2 request heads

    func h2(_ pairs: [(String, String)]) -> HPACKHeaders {
        HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":path", "/")] + pairs)
    }

    @Test func authorityAndHostMustAgree() {
        guard case .refuse = HTTP2RequestHeadChecker.check(h2([(":authority", "a.example"), ("host", "b.example")])) else {
            Issue.record("a mismatch passed")
            return
        }
        guard case .rewrite(let rewritten) = HTTP2RequestHeadChecker.check(h2([(":authority", "a.example"), ("host", "A.EXAMPLE")])) else {
            Issue.record("agreeing fields were not rewritten")
            return
        }
        #expect(!rewritten.contains(name: "host"))
        #expect(rewritten[":authority"] == ["a.example"])
        #expect(HTTP2RequestHeadChecker.check(h2([(":authority", "a.example")])) == .pass)
    }

    @Test func cookiesAreJoined() {
        guard case .rewrite(let rewritten) = HTTP2RequestHeadChecker.check(h2([(":authority", "a"), ("cookie", "a=1"), ("x", "y"), ("cookie", "b=2")])) else {
            Issue.record("cookies were not joined")
            return
        }
        #expect(rewritten["cookie"] == ["a=1; b=2"])
        #expect(rewritten["x"] == ["y"])
    }

    @Test(arguments: [
        [("content-length", "5, 5")], [("content-length", "5"), ("content-length", "6")], [("content-length", "")], [("content-length", "+5")],
        [("x-a", " v")], [("x-a", "v ")], [("x-a", "\tv")], [("host", "a"), ("host", "a")],
    ])
    func malformedFieldsAreRefused(pairs: [(String, String)]) {
        guard case .refuse = HTTP2RequestHeadChecker.check(h2([(":authority", "a")] + pairs)) else {
            Issue.record("\(pairs) passed")
            return
        }
    }

    @Test func equalDuplicateLengthsPass() {
        #expect(HTTP2RequestHeadChecker.check(h2([(":authority", "a"), ("content-length", "5"), ("content-length", "5")])) == .pass)
    }

    // MARK: Upgrades

    @Test func upgradesAreAllowedPerRoute() throws {
        let configuration = try GatewayConfiguration.parse(yaml: """
            listeners: [{port: 8080}]
            clusters: [{name: be, targets: ['http://127.0.0.1:9']}]
            routes:
              - {name: ws, match: {path_prefix: /ws}, cluster: be}
              - {name: none, match: {path_prefix: /x}, cluster: be, upgrades: [], timeouts: {tunnel_idle: 30s}}
            """)
        let gateway = GatewayCompiler().compile(configuration)
        let ws = try #require(gateway.routes.match(host: nil, path: "/ws", method: "GET")?.route)
        let none = try #require(gateway.routes.match(host: nil, path: "/x", method: "GET")?.route)
        #expect(ws.allowsUpgrade("websocket"))
        #expect(ws.allowsUpgrade("WebSocket"))
        #expect(!ws.allowsUpgrade("h2c"))
        #expect(!ws.allowsUpgrade("websocket, h2c"))
        #expect(!none.allowsUpgrade("websocket"))
        #expect(ws.tunnelIdleTimeout == .minutes(10))
        #expect(none.tunnelIdleTimeout == .seconds(30))
    }
}
