import Foundation
import GatehouseConfiguration
import GatehousePolicies
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// Stands in for the authorization server behind the token validator: each cache miss is recorded and waits until
/// the test answers it, on the harness's loop (`TokenValidator.MissResolver`). Confined to that one loop.
final class FakeAuthorizationServer: @unchecked Sendable {
    typealias Answer = (TokenValidator.Outcome, TokenCache<ValidatedToken>.FetchResult)
    private(set) var asked: [String] = []
    private var pending: [EventLoopPromise<Answer>] = []

    var resolver: TokenValidator.MissResolver {
        { [self] token, _, loop in
            asked.append(token)
            let promise = loop.makePromise(of: Answer.self)
            pending.append(promise)
            return promise.futureResult
        }
    }

    var waiting: Int { pending.count }

    /// The oldest open question is answered: the token is active (an exchanged JWT with `scopes`) for a minute.
    func answerActive(jwt: String, scopes: Set<String>) {
        let token = ValidatedToken(jwt: jwt, scopes: scopes, audiences: [], issuer: "http://127.0.0.1:9", clientID: "client-1", subject: "alice")
        pending.removeFirst().succeed((.valid(token), .active(token, expiresAt: Date().timeIntervalSince1970 + 60)))
    }

    /// The oldest open question is answered: the token is not active.
    func answerInactive() {
        pending.removeFirst().succeed((.invalid("the token is not active"), .inactive))
    }
}

/// Requests the route's policies hold back (a token the validator has not seen, waiting for the authorization
/// server), the per-connection token memo, and the total timeout — on the real pipeline and virtual time.
@Suite struct DownstreamSuspensionTests {
    static let yaml = """
        listeners: [{port: 8080}]
        limits: {header_read_timeout: 1s, idle_timeout: 60s}
        authorization_server: {issuer: 'http://127.0.0.1:9', client_id: gateway, client_secret: gateway-secret}
        clusters:
          - {name: one, targets: ['http://127.0.0.1:9001'], retries: {attempts: 0}}
          - {name: two, targets: ['http://127.0.0.1:9001', 'http://127.0.0.1:9002'], retries: {attempts: 1}, outlier_detection: {consecutive_failures: 0}}
        routes:
          - {name: api, match: {path_prefix: /api}, cluster: one, timeouts: {per_try: 3s, total: 3s}, auth: {mode: opaque, scopes_all_of: [orders:read]}}
          - {name: open, match: {path_prefix: /open}, cluster: two, timeouts: {per_try: 2s, total: 3s}}
        """

    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    static let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"

    let authorizationServer = FakeAuthorizationServer()

    func harness() throws -> ProxyHarness {
        try ProxyHarness(Self.yaml, compiler: GatewayCompiler(tokenMissResolver: authorizationServer.resolver))
    }

    func validator(_ proxy: ProxyHarness) throws -> TokenValidator {
        try #require(proxy.runtime.snapshot.tokenValidator)
    }

    @Test func aTokenMissWaitsForTheAuthorizationServerThenProceeds() throws {
        let proxy = try harness()
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer opaque-token-1\r\n\r\n")
        #expect(authorizationServer.asked == ["opaque-token-1"])
        #expect(try proxy.received(by: upstream).isEmpty)  // suspended: nothing forwarded yet
        #expect(try proxy.clientReceived().isEmpty)
        proxy.advance(.seconds(2))  // still within the total timeout of 3 s
        #expect(try proxy.received(by: upstream).isEmpty)

        authorizationServer.answerActive(jwt: Self.jwt, scopes: ["orders:read"])
        let sent = try proxy.received(by: upstream)
        #expect(sent.hasPrefix("GET /api/orders HTTP/1.1\r\n"), "\(sent)")
        #expect(sent.contains("\r\nAuthorization: Bearer \(Self.jwt)\r\n"))  // the exchanged JWT, not the client's token
        #expect(!sent.contains("opaque-token-1"))
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(proxy.state.outcomes.completed == 1)
    }

    @Test func aPipelinedRequestWaitsBehindOneSuspendedForItsToken() throws {
        let proxy = try harness()
        let upstream = try proxy.upstream(9001)
        try proxy.client(
            "GET /api/first HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer opaque-token-3\r\n\r\n"
                + "GET /api/second HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer opaque-token-3\r\n\r\n"
        )
        #expect(authorizationServer.waiting == 1)
        #expect(try proxy.received(by: upstream).isEmpty)  // the second waits for the first, which waits for its token
        authorizationServer.answerActive(jwt: Self.jwt, scopes: ["orders:read"])
        let first = try proxy.received(by: upstream)
        #expect(first.hasPrefix("GET /api/first ") && !first.contains("/api/second"), "\(first)")
        try proxy.respond(on: upstream, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /api/second "))  // its token now cached
        #expect(authorizationServer.asked == ["opaque-token-3"])
        try proxy.respond(on: upstream, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        try proxy.expectTwoPipelinedAnswersInOrder()
    }

    @Test func aTokenTheAuthorizationServerRefusesIsAnswered401AndNeverForwarded() throws {
        let proxy = try harness()
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer revoked-token\r\n\r\n")
        #expect(authorizationServer.waiting == 1)
        authorizationServer.answerInactive()
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(answer)")
        #expect(answer.contains("\r\nWWW-Authenticate: Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"the token is not active\"\r\n"))
        #expect(answer.contains("\"error\":\"invalid_token\""))
        #expect(!answer.contains("\r\nConnection: close\r\n"))  // the request was read whole: the connection goes on
        #expect(try proxy.received(by: upstream).isEmpty)
        #expect(proxy.state.outcomes.rejected == 1)
        // The refusal is cached (negative TTL): the same token again is refused without asking.
        try proxy.client("GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer revoked-token\r\n\r\n")
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 401 "))
        #expect(authorizationServer.asked == ["revoked-token"])
    }

    @Test func aTokenWithoutTheRoutesScopeIsAnswered403() throws {
        let proxy = try harness()
        try proxy.client("GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer weak-token\r\n\r\n")
        authorizationServer.answerActive(jwt: Self.jwt, scopes: ["orders:write"])
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 403 Forbidden\r\n"), "\(answer)")
        #expect(answer.contains("error=\"insufficient_scope\"") && answer.contains("scope=\"orders:read\""))
        #expect(answer.contains("\"error\":\"insufficient_scope\""))
    }

    @Test func theConnectionRemembersItsTokenAndSkipsTheCache() throws {
        let proxy = try harness()
        let upstream = try proxy.upstream(9001)
        let request = "GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer opaque-token-2\r\n\r\n"
        func roundTrip() throws {
            try proxy.client(request)
            #expect(try proxy.received(by: upstream).contains("\r\nAuthorization: Bearer \(Self.jwt)\r\n"))
            try proxy.respond(on: upstream, Self.ok)
            #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 200 "))
        }
        // A miss (the authorization server answers), then a hit of the shared cache, which the connection remembers.
        try proxy.client(request)
        authorizationServer.answerActive(jwt: Self.jwt, scopes: ["orders:read"])
        try proxy.respond(on: upstream, Self.ok)
        _ = try proxy.clientReceived()
        try roundTrip()
        let validator = try validator(proxy)
        let remembered = validator.statistics.cache
        #expect(remembered.misses == 1 && remembered.hits == 1)

        // The same token again on the same connection: forwarded with neither the cache nor the server asked.
        try roundTrip()
        try roundTrip()
        #expect(validator.statistics.cache == remembered)
        #expect(authorizationServer.asked.count == 1)

        // Another connection with the same token has no memo: the shared cache answers (a hit), still no server.
        let other = try proxy.anotherClient(port: 40001)
        try other.writeInbound(ByteBuffer(string: request))
        try proxy.respond(on: upstream, Self.ok)
        #expect(try proxy.answer(to: other).hasPrefix("HTTP/1.1 200 "))
        #expect(validator.statistics.cache.hits == remembered.hits + 1)
        #expect(authorizationServer.asked.count == 1)
        #expect(proxy.state.outcomes.completed == 5)
    }

    @Test func theTotalTimeoutAnswersARequestStillWaitingForItsToken() throws {
        let proxy = try harness()
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer slow-token\r\n\r\n")
        #expect(authorizationServer.waiting == 1)
        proxy.advance(.milliseconds(2900))
        #expect(try proxy.clientReceived().isEmpty)
        proxy.advance(.milliseconds(200))
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(answer)")
        #expect(answer.contains("\"error\":\"temporarily_unavailable\"") && answer.contains("within 3000 ms"))
        #expect(answer.contains("\r\nRetry-After: 2\r\n"))
        // The late answer finds the request gone: nothing is forwarded.
        authorizationServer.answerActive(jwt: Self.jwt, scopes: ["orders:read"])
        #expect(try proxy.received(by: upstream).isEmpty)
        #expect(proxy.state.outcomes.total == 1)
    }

    @Test func theTotalTimeoutCutsARetryThatOutlivesIt() throws {
        let proxy = try harness()
        let first = try proxy.upstream(9001)
        let second = try proxy.upstream(9002)
        try proxy.client("GET /open/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        let firstGot = try proxy.received(by: first)
        let secondGot = try proxy.received(by: second)
        #expect((firstGot + secondGot).hasPrefix("GET /open/slow "))
        let (failing, other) = firstGot.isEmpty ? (second, first) : (first, second)
        // The first try is reset after 1.5 s; the retry's own per-try deadline (2 s) would be at 3.5 s.
        proxy.advance(.milliseconds(1500))
        try failing.close().wait()
        #expect(try proxy.received(by: other).hasPrefix("GET /open/slow "))
        proxy.advance(.milliseconds(1400))
        #expect(try proxy.clientReceived().isEmpty)
        proxy.advance(.milliseconds(200))  // 3.1 s: the total of 3 s comes first
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 504 Gateway Timeout\r\n"), "\(answer)")
        #expect(answer.contains("within 3000 ms"))
        #expect(!other.isActive)  // the abandoned try's connection is closed
        #expect(proxy.state.outcomes.upstreamFailures == 1 && proxy.state.outcomes.total == 1)
    }

    @Test func aRequestWithoutATokenGetsTheRoutesPrebuiltChallenge() throws {
        let proxy = try harness()
        for index in 1...2 {
            try proxy.client("GET /api/orders HTTP/1.1\r\nHost: a\r\nX-Request-Id: id-\(index)\r\n\r\n")
            let answer = try proxy.clientReceived()
            #expect(answer.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(answer)")
            #expect(answer.contains("\r\nWWW-Authenticate: Bearer realm=\"gatehouse\"\r\n"))
            // The prebuilt body carries each request's own id.
            #expect(answer.hasSuffix("\r\n\r\n{\"error\":\"unauthorized\",\"message\":\"a bearer token is required\",\"request_id\":\"id-\(index)\"}"), "\(answer)")
        }
        #expect(authorizationServer.asked.isEmpty)
    }
}
