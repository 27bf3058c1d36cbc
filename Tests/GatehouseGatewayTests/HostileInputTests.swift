import GatehouseConfiguration
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// The downstream pipeline fed raw bytes on an EmbeddedChannel: malformed or oversized requests are answered by
/// the gateway itself (never forwarded) and the connection is closed.
@Suite struct HostileInputTests {
    static let configuration = try! GatewayConfiguration.parse(yaml: """
        listeners: [{port: 8080}]
        limits: {max_header_bytes: 2048, max_header_count: 20, max_body_bytes: 1000}
        clusters: [{name: backend, targets: ['http://127.0.0.1:9']}]
        routes:
          - {match: {path_prefix: /api}, cluster: backend}
        """)

    /// Runs raw request bytes through the real downstream pipeline; returns what the gateway wrote back and whether
    /// it closed the connection.
    func exchange(_ raw: String) throws -> (response: String, closed: Bool) {
        let channel = EmbeddedChannel()
        let compiler = GatewayCompiler()
        let settings = GatewayCompiler.settings(Self.configuration, defaultThreads: 1)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = settings.maxHeaderBytesHardLimit
        limits.maxHeaderFieldSize = settings.maxHeaderBytesHardLimit
        limits.maxHeaderFieldCount = settings.maxHeaderCountHardLimit
        let loops = LoopStates(group: channel.embeddedEventLoop)
        // The gateway's own HTTP/1.1 pipeline (decoder, downstream handler with its response serializer).
        try GatewayServer.configureHTTP1(channel, runtime: GatewayRuntime(compiler.compile(Self.configuration)), loops: loops, scheme: "http", limits: limits)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4000)).wait()
        do {
            try channel.writeInbound(ByteBuffer(string: raw))
        } catch {
            // The decoder also reports the error through the pipeline; the handler has answered it.
        }
        var response = ""
        while let part = try channel.readOutbound(as: ByteBuffer.self) { response += String(buffer: part) }
        let closed = !channel.isActive
        _ = try? channel.finish()
        return (response, closed)
    }

    func expectRefused(_ raw: String, status: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (response, closed) = try exchange(raw)
        #expect(response.hasPrefix("HTTP/1.1 \(status) "), "got: \(response.prefix(200))", sourceLocation: sourceLocation)
        #expect(response.contains("\"request_id\":\""), sourceLocation: sourceLocation)
        #expect(response.contains("application/json"), sourceLocation: sourceLocation)
        #expect(closed, "the connection must be closed", sourceLocation: sourceLocation)
    }

    @Test func contentLengthAndTransferEncodingTogether() throws {
        try expectRefused("POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400)
    }

    @Test func differingDuplicateContentLengths() throws {
        try expectRefused("POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", status: 400)
    }

    /// The smuggling report of issue 10: a `Connection` naming a framing header (or Host) is refused before anything
    /// is forwarded, whether or not a body follows.
    @Test(arguments: ["content-length", "Content-Length", "keep-alive, transfer-encoding", "host"])
    func connectionNamingAFramingHeader(nominated: String) throws {
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: \(nominated)\r\nContent-Length: 33\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n", status: 400)
        try expectRefused("POST /api/x HTTP/1.1\r\nHost: a\r\nConnection: \(nominated)\r\n\r\n", status: 400)
    }

    @Test func overlongRequestTargetIs414() throws {
        try expectRefused("GET /api/\(String(repeating: "a", count: 9000)) HTTP/1.1\r\nHost: a\r\n\r\n", status: 414)
    }

    @Test func obsoleteLineFolding() throws {
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", status: 400)
    }

    @Test func spaceBeforeColon() throws {
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\nX-Bad : value\r\n\r\n", status: 400)
    }

    @Test(arguments: ["X-Bad\u{01}Name: v", "X-Ok: bad\u{00}value", "X(): v"])
    func invalidCharactersInHeaders(line: String) throws {
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\n\(line)\r\n\r\n", status: 400)
    }

    @Test func malformedRequestLine() throws {
        try expectRefused("GET /api/x HTTP/9.9\r\nHost: a\r\n\r\n", status: 400)
        try expectRefused("G@T /api/x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400)
    }

    @Test func tooManyHeaders() throws {
        let headers = (0..<25).map { "X-H\($0): v\r\n" }.joined()
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\n\(headers)\r\n", status: 431)
    }

    @Test func headerBlockTooLarge() throws {
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: 3000))\r\n\r\n", status: 431)
        // Past the decoder's own hard cap as well.
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\nX-Huge: \(String(repeating: "a", count: 40000))\r\n\r\n", status: 431)
    }

    @Test func bodyOverTheRouteLimit() throws {
        try expectRefused("POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", status: 413)
    }

    @Test func hostIsRequiredAndSingle() throws {
        try expectRefused("GET /api/x HTTP/1.1\r\n\r\n", status: 400)
        try expectRefused("GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400)
    }

    @Test(arguments: ["/api/..%2Fadmin", "/api/%00", "/api/a%5Cb", "/api/%zz", "*"])
    func badTargets(target: String) throws {
        try expectRefused("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n", status: 400)
    }

    @Test func unknownRouteIs404AndKeepsTheConnection() throws {
        let (response, closed) = try exchange("GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(response.hasPrefix("HTTP/1.1 404 "))
        #expect(response.contains("\"error\":\"not_found\""))
        #expect(!closed)
    }

    @Test func dotSegmentsCannotEscapeARoute() throws {
        // /api/../other normalizes to /other, which has no route: the request never reaches /api's cluster.
        let (response, _) = try exchange("GET /api/../other HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(response.hasPrefix("HTTP/1.1 404 "))
    }

    @Test func connectAndUpgradeAreRefused() throws {
        try expectRefused("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", status: 405)
    }
}

@Suite struct HeaderHygieneTests {
    let untrusted = HeaderHygiene.Peer(address: "192.0.2.7", isTrustedProxy: false, scheme: "https")
    let trusted = HeaderHygiene.Peer(address: "10.0.0.5", isTrustedProxy: true, scheme: "http")

    @Test func hopByHopHeadersAreStripped() {
        var headers = HTTPHeaders([
            ("Host", "a"), ("Connection", "keep-alive, X-Private"), ("X-Private", "secret"), ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"),
            ("Proxy-Connection", "keep-alive"), ("Trailer", "X-T"), ("X-Kept", "yes"),
        ])
        HeaderHygiene.prepareRequest(&headers, peer: untrusted, requestID: "r1", via: "1.1 gatehouse", isUpgrade: false)
        for name in ["connection", "x-private", "keep-alive", "te", "transfer-encoding", "upgrade", "proxy-authorization", "proxy-connection", "trailer"] {
            #expect(!headers.contains(name: name), "\(name) must be removed")
        }
        #expect(headers["x-kept"] == ["yes"])
        #expect(headers["x-request-id"] == ["r1"])
        #expect(headers["via"] == ["1.1 gatehouse"])
    }

    @Test func connectionCannotStripTheGatewaysOwnHeaders() {
        // Naming a header in Connection makes it hop-by-hop; the Host and the headers the gateway sets must survive.
        var headers = HTTPHeaders([
            ("Host", "api.example"), ("Connection", "Host, X-Forwarded-For, Via, X-Request-Id, Forwarded, X-Other"), ("X-Other", "1"),
        ])
        HeaderHygiene.prepareRequest(&headers, peer: untrusted, requestID: "r2", via: "1.1 gatehouse", isUpgrade: false)
        #expect(headers["host"] == ["api.example"])
        #expect(headers["x-forwarded-for"] == ["192.0.2.7"])
        #expect(headers["via"] == ["1.1 gatehouse"])
        #expect(headers["x-request-id"] == ["r2"])
        #expect(headers["forwarded"] == ["for=192.0.2.7;proto=https;host=\"api.example\""])
        #expect(!headers.contains(name: "x-other"))
        #expect(!headers.contains(name: "connection"))
    }

    @Test func upgradeKeepsConnectionUpgradeOnly() {
        var headers = HTTPHeaders([("Host", "a"), ("Connection", "Upgrade, X-Hop"), ("Upgrade", "websocket"), ("X-Hop", "1"), ("Sec-WebSocket-Key", "k")])
        HeaderHygiene.prepareRequest(&headers, peer: untrusted, requestID: "r3", via: "1.1 gatehouse", isUpgrade: true)
        #expect(headers["connection"] == ["upgrade"])
        #expect(headers["upgrade"] == ["websocket"])
        #expect(headers["sec-websocket-key"] == ["k"])
        #expect(!headers.contains(name: "x-hop"))
    }

    @Test func untrustedPeersCannotSpoofForwardedHeaders() {
        var headers = HTTPHeaders([
            ("Host", "api.example"), ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "evil"),
            ("Forwarded", "for=6.6.6.6"),
        ])
        HeaderHygiene.prepareRequest(&headers, peer: untrusted, requestID: "r", via: "1.1 gatehouse", isUpgrade: false)
        #expect(headers["x-forwarded-for"] == ["192.0.2.7"])
        #expect(headers["x-forwarded-proto"] == ["https"])
        #expect(headers["x-forwarded-host"] == ["api.example"])
        #expect(headers["forwarded"] == ["for=192.0.2.7;proto=https;host=\"api.example\""])
    }

    @Test func trustedProxiesAreAppendedTo() {
        var headers = HTTPHeaders([
            ("Host", "api.example"), ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"), ("Forwarded", "for=203.0.113.9;proto=https"),
            ("Via", "1.1 edge"),
        ])
        HeaderHygiene.prepareRequest(&headers, peer: trusted, requestID: "r", via: "1.1 gatehouse", isUpgrade: false)
        #expect(headers["x-forwarded-for"] == ["203.0.113.9, 10.0.0.5"])
        #expect(headers["x-forwarded-proto"] == ["https"])
        #expect(headers["forwarded"] == ["for=203.0.113.9;proto=https, for=10.0.0.5;proto=http;host=\"api.example\""])
        #expect(headers["via"] == ["1.1 edge, 1.1 gatehouse"])
    }

    @Test func ipv6PeersAreQuotedInForwarded() {
        var headers = HTTPHeaders([("Host", "a")])
        HeaderHygiene.prepareRequest(&headers, peer: .init(address: "2001:db8::1", isTrustedProxy: false, scheme: "http"), requestID: "r", via: "1.1 gatehouse", isUpgrade: false)
        #expect(headers["forwarded"] == ["for=\"[2001:db8::1]\";proto=http;host=\"a\""])
    }

    @Test func responseHopByHopHeadersAreStripped() {
        var headers = HTTPHeaders([("Connection", "close, X-Internal"), ("X-Internal", "1"), ("Keep-Alive", "x"), ("Content-Length", "3")])
        HeaderHygiene.prepareResponse(&headers, via: "1.1 gatehouse", requestID: "r9", isUpgrade: false)
        #expect(!headers.contains(name: "connection"))
        #expect(!headers.contains(name: "x-internal"))
        #expect(!headers.contains(name: "keep-alive"))
        #expect(headers["content-length"] == ["3"])
        #expect(headers["x-request-id"] == ["r9"])
    }

    @Test func cidrMatching() throws {
        let v4 = try #require(GatewayConfiguration.CIDR(address: [10, 0, 0, 0], prefixLength: 8))
        #expect(v4.contains([10, 1, 2, 3]))
        #expect(!v4.contains([11, 0, 0, 1]))
        #expect(!v4.contains(Array(repeating: 0, count: 16)))
    }
}
