import Foundation
import GatehouseConfiguration
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// The sign-in pages' hardening: CSP form-action, the `__Host-` session cookie, signing out, 413 for large forms.
@Suite struct PageSecurityTests {
    let flow = AuthorizationFlowTests()
    static let csp = HTTPField.Name("Content-Security-Policy")!

    @Test func pagesRestrictFormActionToThisServerAndTheClientsOrigin() async throws {
        try await withAuthServer { client, _, _ in
            let start = try await client.send(.get, flow.authorizeURL())
            let session = try #require(start.cookie(AuthorizationServer.sessionCookie))
            let login = try await client.send(.get, start.location ?? "", cookie: session)
            let policy = try #require(login.headers[Self.csp])
            // The sign-in form ends in a 303 to the client, which browsers check against form-action too.
            #expect(policy.hasSuffix("form-action 'self' http://127.0.0.1:8081"), "\(policy)")
            #expect(policy.contains("default-src 'none'"))
            let error = try await client.send(.get, flow.authorizeURL(client: "ghost"))
            #expect(error.headers[Self.csp]?.hasSuffix("form-action 'self'") == true, "\(error.headers[Self.csp] ?? "")")
        }
    }

    @Test func theSessionCookieHasTheHostPrefixOnAnHTTPSIssuer() async throws {
        try await withAuthServer(configure: { $0.issuer = "https://auth.example.com" }) { client, _, _ in
            let start = try await client.send(.get, flow.authorizeURL())
            let setCookie = try #require(start.headers[values: .setCookie].first)
            #expect(setCookie.hasPrefix("__Host-gatehouse_session="), "\(setCookie.prefix(30))")
            #expect(setCookie.contains("; Secure"))
            #expect(setCookie.contains("; Path=/;"))
            #expect(!setCookie.lowercased().contains("domain="))
            #expect(start.cookie(AuthorizationServer.sessionCookie) == nil)
            // The server reads the prefixed cookie back (and only that one).
            let value = try #require(start.cookie(AuthorizationServer.hostSessionCookie))
            let page = try await client.send(.get, start.location ?? "", headers: [.cookie: "\(AuthorizationServer.hostSessionCookie)=\(value)"])
            #expect(page.status == .ok, "\(page.text)")
            let unprefixed = try await client.send(.get, start.location ?? "", cookie: value)
            #expect(unprefixed.status == .badRequest)
        }
    }

    @Test func theLoopbackHTTPIssuerKeepsThePlainCookieName() async throws {
        try await withAuthServer { client, _, _ in
            let start = try await client.send(.get, flow.authorizeURL())
            #expect(start.headers[values: .setCookie].first?.hasPrefix("gatehouse_session=") == true)
        }
    }

    @Test func logoutWithTheCSRFTokenEndsTheSession() async throws {
        try await withAuthServer { client, _, _ in
            let url = flow.authorizeURL(client: "demo-web", redirect: AuthorizationFlowTests.webRedirect)
            let (_, session) = try await flow.signIn(client, url: url)
            let page = try await client.send(.get, "/logout", cookie: session)
            #expect(page.status == .ok)
            #expect(page.text.contains("id=\"logout-form\""))
            let csrf = try #require(page.hidden("csrf_token"))

            // A forged or missing token changes nothing.
            let forged = try await client.send(.post, "/logout", form: [("csrf_token", "forged")], cookie: session)
            #expect(forged.status == .badRequest)
            let missing = try await client.send(.post, "/logout", form: [("other", "x")], cookie: session)
            #expect(missing.status == .badRequest)
            let stillSignedIn = try await client.send(.get, url, cookie: session)
            #expect(stillSignedIn.location?.hasPrefix(AuthorizationFlowTests.webRedirect + "?code=") == true)

            let out = try await client.send(.post, "/logout", form: [("csrf_token", csrf)], cookie: session)
            #expect(out.status == .ok)
            #expect(out.text.contains("id=\"signed-out\""))
            let cleared = try #require(out.headers[values: .setCookie].first)
            #expect(cleared.hasPrefix("gatehouse_session=;"))
            #expect(cleared.contains("Max-Age=0"))
            // The old cookie no longer signs anyone in.
            let after = try await client.send(.get, url, cookie: session)
            #expect(after.location?.hasPrefix("/login?request=") == true, "\(after.location ?? after.text)")
            // Logging out again, or without a session, is just the signed-out page.
            let again = try await client.send(.post, "/logout", form: [("csrf_token", csrf)], cookie: session)
            #expect(again.status == .ok)
        }
    }

    @Test func oversizedFormsGet413() async throws {
        try await withAuthServer { client, _, _ in
            let large = String(repeating: "a", count: 70 * 1024)
            let token = try await client.token([("grant_type", "client_credentials"), ("padding", large)], basic: ("demo-service", "demo-service-secret"))
            #expect(token.status == .contentTooLarge)
            #expect(token.string("error") == "invalid_request")
            #expect(token.headers[.contentType]?.hasPrefix("application/json") == true)
            let introspect = try await client.send(.post, "/introspect", form: [("token", large)])
            #expect(introspect.status == .contentTooLarge)

            let start = try await client.send(.get, flow.authorizeURL())
            let session = try #require(start.cookie(AuthorizationServer.sessionCookie))
            let page = try await client.send(.get, start.location ?? "", cookie: session)
            let login = try await client.send(
                .post, "/login", form: [("csrf_token", page.hidden("csrf_token") ?? ""), ("request", page.hidden("request") ?? ""), ("username", "alice"), ("password", large)],
                cookie: session
            )
            #expect(login.status == .contentTooLarge)
            #expect(login.headers[.contentType]?.hasPrefix("text/html") == true)
            // Just under the limit is read as usual.
            let small = try await client.token([("grant_type", "client_credentials"), ("padding", String(repeating: "a", count: 60 * 1024))], basic: ("demo-service", "demo-service-secret"))
            #expect(small.status == .ok, "\(small.text.prefix(200))")
        }
    }
}

/// The login throttle's per-address key behind a reverse proxy.
@Suite struct TrustedProxyTests {
    static let web = ("demo-web", "demo-web-secret")

    func guess(_ client: any TestClientProtocol, user: String, forwardedFor: String?) async throws -> Reply {
        var headers: HTTPFields = [.authorization: "Basic " + Data("demo-web:demo-web-secret".utf8).base64EncodedString()]
        if let forwardedFor { headers[HTTPField.Name("X-Forwarded-For")!] = forwardedFor }
        return try await client.send(.post, "/token", headers: headers, form: [("grant_type", "password"), ("username", user), ("password", "wrong")])
    }

    /// Behind a trusted proxy, one client's guesses do not throttle another's (before: one key for everyone).
    @Test func behindATrustedProxyEachClientHasItsOwnAddressKey() async throws {
        try await withAuthServer(configure: { $0.trustedProxies = [CIDR.parse("127.0.0.0/8")!, CIDR.parse("::1/128")!] }) { client, _, _ in
            for index in 0..<5 {
                _ = try await guess(client, user: "nobody\(index)", forwardedFor: "198.51.100.7")
            }
            let throttled = try await guess(client, user: "nobody9", forwardedFor: "203.0.113.1, 198.51.100.7")
            #expect(throttled.headers[.retryAfter] != nil, "the client-written first hop must not pick the key")
            let other = try await guess(client, user: "nobody10", forwardedFor: "198.51.100.8")
            #expect(other.headers[.retryAfter] == nil, "\(other.text)")
            #expect(other.string("error_description") == "the username or password is wrong")
        }
    }

    /// Without trusted proxies, X-Forwarded-For is the client's own word and is ignored.
    @Test func withoutTrustedProxiesXForwardedForIsIgnored() async throws {
        try await withAuthServer { client, _, _ in
            for index in 0..<5 {
                _ = try await guess(client, user: "nobody\(index)", forwardedFor: "198.51.100.\(index)")
            }
            let throttled = try await guess(client, user: "nobody9", forwardedFor: "198.51.100.99")
            #expect(throttled.headers[.retryAfter] != nil)
        }
    }

    @Test func resolvesTheLastUntrustedHop() throws {
        let trusted = [CIDR.parse("10.0.0.0/8")!, CIDR.parse("2001:db8::/32")!]
        func resolve(_ peer: String, _ forwarded: [String]) -> String {
            ClientAddress.resolve(peer: peer, forwardedFor: forwarded, trustedProxies: trusted)
        }
        #expect(resolve("192.0.2.1", ["198.51.100.7"]) == "192.0.2.1")  // untrusted peer: its word is ignored
        #expect(resolve("10.0.0.1", ["198.51.100.7"]) == "198.51.100.7")
        #expect(resolve("10.0.0.1", ["1.1.1.1, 198.51.100.7, 10.0.0.2"]) == "198.51.100.7")  // proxies chained
        #expect(resolve("10.0.0.1", ["1.1.1.1", "198.51.100.7"]) == "198.51.100.7")  // several fields, in order
        #expect(resolve("::ffff:10.0.0.1", ["198.51.100.7"]) == "198.51.100.7")  // IPv4-mapped peer in an IPv4 block
        #expect(resolve("10.0.0.1", ["[2001:db9::1]:443"]) == "2001:db9::1")
        #expect(resolve("10.0.0.1", ["198.51.100.7:5000"]) == "198.51.100.7")
        #expect(resolve("10.0.0.1", ["::ffff:198.51.100.7"]) == "198.51.100.7")
        #expect(resolve("10.0.0.1", ["10.0.0.3"]) == "10.0.0.3")  // every hop trusted: the leftmost
        #expect(resolve("10.0.0.1", ["garbage, 10.0.0.3"]) == "10.0.0.3")  // stops at a malformed hop
        #expect(resolve("10.0.0.1", []) == "10.0.0.1")
        #expect(ClientAddress.resolve(peer: "10.0.0.1", forwardedFor: ["198.51.100.7"], trustedProxies: []) == "10.0.0.1")
    }
}
