import GatehouseConfiguration
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// Admission is a pure function of the head, its scan and the configuration: each refusal is checked here without a
/// channel, in the order the checks run.
@Suite struct RequestAdmissionTests {
    static let gateway = GatewayCompiler().compile(
        try! GatewayConfiguration.parse(yaml: """
            listeners: [{port: 8080}]
            limits: {max_header_bytes: 1024, max_header_count: 10, max_body_bytes: 100}
            clusters: [{name: be, targets: ['http://127.0.0.1:9']}]
            routes:
              - {name: api, match: {host: api.example, path_prefix: /api}, cluster: be, rewrite_prefix: /v2}
              - {name: any, match: {path_prefix: /}, cluster: be, upgrades: []}
            """)
    )

    func admit(_ method: HTTPMethod = .GET, _ uri: String, _ headers: [(String, String)], version: HTTPVersion = .http1_1, http2Refusal: String? = nil)
        -> Result<AdmittedRequest, GatewayReply>
    {
        let head = HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(headers))
        return Self.result(RequestAdmission.admit(head, RequestHeadScan(head, maximumTargetLength: PathNormalizer.maximumLength), gateway: Self.gateway, http2Refusal: http2Refusal))
    }

    static func result(_ decision: AdmissionDecision) -> Result<AdmittedRequest, GatewayReply> {
        switch decision {
        case .admit(let admitted): .success(admitted)
        case .refuse(let reply): .failure(reply)
        }
    }

    func refusal(_ result: Result<AdmittedRequest, GatewayReply>) -> (status: UInt, error: String, closes: Bool)? {
        guard case .failure(let reply) = result else { return nil }
        return (reply.status.code, reply.error, reply.closesConnection)
    }

    @Test func anOrdinaryRequestIsAdmittedWithItsRouteAndRewrite() throws {
        let admitted = try admit(.GET, "/api/orders/../items?x=1", [("Host", "api.example")]).get()
        #expect(admitted.route.name == "api")
        #expect(admitted.upstreamTarget == "/v2/items?x=1")
        #expect(admitted.framing == .none && !admitted.hasBody && admitted.idempotent)
    }

    @Test func refusalsInOrder() {
        #expect(refusal(admit(.GET, "/", [("Host", "a")], http2Refusal: "x"))?.status == 400)
        #expect(refusal(admit(.GET, "/" + String(repeating: "a", count: 8200), [("Host", "a")]))?.status == 414)
        #expect(refusal(admit(.GET, "/", [("Host", "a")] + (0..<11).map { ("X-\($0)", "v") }))?.status == 431)
        #expect(refusal(admit(.GET, "/", [("Host", "a"), ("X-Big", String(repeating: "v", count: 1100))]))?.status == 431)
        #expect(refusal(admit(.GET, "/", []))?.status == 400)  // HTTP/1.1 without Host
        #expect(refusal(admit(.GET, "/", [("Host", "a"), ("Host", "b")]))?.status == 400)
        #expect(refusal(admit(.GET, "/", [("Host", "a"), ("Connection", "content-length")]))?.status == 400)
        #expect(refusal(admit(.POST, "/", [("Host", "a"), ("Content-Length", "5, 5")]))?.status == 400)
        #expect(refusal(admit(.CONNECT, "a:443", [("Host", "a")]))?.status == 405)
        #expect(refusal(admit(.GET, "/a%2Fb", [("Host", "a")]))?.status == 400)
        #expect(refusal(admit(.GET, "/x", [("Host", "api.example"), ("Content-Length", "101")]))?.status == 413)
        #expect(refusal(admit(.TRACE, "/x", [("Host", "a"), ("Content-Length", "1")]))?.status == 400)
        let notFound = GatewayCompiler().compile(
            try! GatewayConfiguration.parse(yaml: "listeners: [{port: 1}]\nclusters: [{name: be, targets: ['http://127.0.0.1:9']}]\nroutes: [{match: {path_prefix: /only}, cluster: be}]")
        )
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/else", headers: ["Host": "a"])
        guard case .refuse(let reply) = RequestAdmission.admit(head, RequestHeadScan(head, maximumTargetLength: 8192), gateway: notFound, http2Refusal: nil) else {
            Issue.record("routed")
            return
        }
        #expect(reply.status == .notFound && !reply.closesConnection)  // a keep-alive request's 404 keeps the connection
    }

    @Test func upgradesFollowTheRoute() throws {
        let api = try admit(.GET, "/api/ws", [("Host", "api.example"), ("Connection", "Upgrade"), ("Upgrade", "websocket")]).get()
        #expect(api.isUpgrade && api.requestsUpgrade)
        let h2c = try admit(.GET, "/api/ws", [("Host", "api.example"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")]).get()
        #expect(!h2c.isUpgrade && h2c.requestsUpgrade)
        let other = try admit(.GET, "/ws", [("Host", "b"), ("Connection", "Upgrade"), ("Upgrade", "websocket")]).get()
        #expect(!other.isUpgrade)  // `upgrades: []`
        #expect(refusal(admit(.GET, "/ws", [("Host", "b"), ("Connection", "Upgrade"), ("Upgrade", "websocket")], version: HTTPVersion(major: 2, minor: 0)))?.status == 501)
    }

    @Test func absoluteFormRoutesOnItsAuthority() throws {
        let admitted = try admit(.GET, "http://api.example/api/x", [("Host", "other.example")]).get()
        #expect(admitted.route.name == "api" && admitted.host == "api.example")
    }

    @Test func theScanFindsTraceContextInTheSamePass() {
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "TraceState": "a=1", "b3": "x", "X-B3-TraceId": "t",
            "X-B3-SpanId": "s", "X-B3-Sampled": "1", "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793", "Host": "a",
        ])
        let scan = RequestHeadScan(head, maximumTargetLength: 8192)
        #expect(scan.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(scan.tracestate == "a=1" && scan.b3 == "x" && scan.b3TraceID == "t" && scan.b3SpanID == "s" && scan.b3Sampled == "1")
        #expect(scan.amznTraceID == "Root=1-5759e988-bd862e3fe1be46a994272793")
        #expect(scan.host == "a" && scan.hostCount == 1)
    }
}
