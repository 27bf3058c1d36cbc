import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// The token endpoint over real HTTP: every grant and the RFC 6749 §5.2 error shapes.
@Suite struct TokenEndpointTests {
    func expectError(_ reply: Reply, _ code: String, status: HTTPResponse.Status = .badRequest, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(reply.status == status, sourceLocation: sourceLocation)
        #expect(reply.string("error") == code, "\(reply.text)", sourceLocation: sourceLocation)
        #expect(reply.string("error_description")?.isEmpty == false, sourceLocation: sourceLocation)
        #expect(reply.headers[.cacheControl] == "no-store", sourceLocation: sourceLocation)
        #expect(reply.string("request_id") == reply.headers[HTTPField.Name("X-Request-Id")!], sourceLocation: sourceLocation)
    }

    @Test func metadata() async throws {
        try await withAuthServer { client, _, _ in
            for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
                let reply = try await client.send(.get, path)
                #expect(reply.status == .ok)
                #expect(reply.string("issuer") == "http://127.0.0.1:9000")
                #expect(reply.string("token_endpoint") == "http://127.0.0.1:9000/token")
                #expect(reply.string("authorization_endpoint") == "http://127.0.0.1:9000/authorize")
                #expect(reply.json["code_challenge_methods_supported"] as? [String] == ["S256"])
                #expect(reply.json["authorization_response_iss_parameter_supported"] as? Bool == true)
                #expect(Set(reply.json["grant_types_supported"] as? [String] ?? []) == ["authorization_code", "implicit", "password", "client_credentials", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"])
                #expect(Set(reply.json["response_types_supported"] as? [String] ?? []) == ["code", "token"])
                #expect(Set(reply.json["token_endpoint_auth_methods_supported"] as? [String] ?? []) == ["client_secret_basic", "client_secret_post", "none"])
            }
        }
    }

    @Test func clientCredentialsWithBasicAndPost() async throws {
        try await withAuthServer { client, _, store in
            let basic = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: ("demo-service", "demo-service-secret"))
            #expect(basic.status == .ok)
            #expect(basic.string("token_type") == "Bearer")
            #expect(basic.json["expires_in"] as? Int == 3600)
            #expect(basic.string("scope") == "orders:read")
            #expect(basic.json["refresh_token"] == nil)
            #expect(basic.headers[.cacheControl] == "no-store")
            let stored = try await store.token(TokenLocator(token: basic.string("access_token") ?? "")!)
            #expect(stored?.clientID == "demo-service")
            #expect(stored?.userID == nil)

            let post = try await client.token([("grant_type", "client_credentials"), ("client_id", "demo-service"), ("client_secret", "demo-service-secret")])
            #expect(post.status == .ok)
            #expect(post.string("scope") == "orders:read orders:write")  // default: everything registered
            #expect(post.string("access_token") != basic.string("access_token"))
        }
    }

    @Test func clientAuthenticationFailures() async throws {
        try await withAuthServer { client, _, _ in
            let wrong = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "nope"))
            expectError(wrong, "invalid_client", status: .unauthorized)
            #expect(wrong.headers[.wwwAuthenticate]?.hasPrefix("Basic") == true)
            expectError(try await client.token([("grant_type", "client_credentials")], basic: ("ghost", "x")), "invalid_client", status: .unauthorized)
            expectError(try await client.token([("grant_type", "client_credentials")]), "invalid_client", status: .unauthorized)
            expectError(try await client.token([("grant_type", "client_credentials"), ("client_id", "demo-service")]), "invalid_client", status: .unauthorized)
            // Two methods at once.
            expectError(
                try await client.token([("grant_type", "client_credentials"), ("client_secret", "demo-service-secret")], basic: ("demo-service", "demo-service-secret")),
                "invalid_request"
            )
            // Malformed Basic.
            let malformed = try await client.send(.post, "/token", headers: [.authorization: "Basic !!!"], form: [("grant_type", "client_credentials")])
            expectError(malformed, "invalid_client", status: .unauthorized)
            // A public client sending a secret.
            expectError(try await client.token([("grant_type", "refresh_token"), ("refresh_token", "x")], basic: ("demo-spa", "guess")), "invalid_client", status: .unauthorized)
        }
    }

    @Test func requestShapeErrors() async throws {
        try await withAuthServer { client, _, _ in
            let auth = ("demo-service", "demo-service-secret")
            expectError(try await client.token([("scope", "orders:read")], basic: auth), "invalid_request")
            expectError(try await client.token([("grant_type", "urn:teleport")], basic: auth), "unsupported_grant_type")
            expectError(try await client.token([("grant_type", "implicit")], basic: auth), "unsupported_grant_type")
            expectError(try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: auth), "unauthorized_client")
            expectError(try await client.token([("grant_type", "client_credentials"), ("scope", "admin")], basic: auth), "invalid_scope")
            expectError(try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read  orders:write")], basic: auth), "invalid_scope")
            // A repeated parameter (RFC 6749 §3.2).
            let repeated = try await client.send(.post, "/token", headers: [.authorization: "Basic ZGVtby1zZXJ2aWNlOmRlbW8tc2VydmljZS1zZWNyZXQ=", .contentType: "application/x-www-form-urlencoded"], form: nil)
            expectError(repeated, "invalid_request")
            let duplicate = try await client.execute(
                uri: "/token", method: .post,
                headers: [.authorization: "Basic ZGVtby1zZXJ2aWNlOmRlbW8tc2VydmljZS1zZWNyZXQ=", .contentType: "application/x-www-form-urlencoded"],
                body: .init(string: "grant_type=client_credentials&scope=orders:read&scope=orders:write")
            ) { Reply(status: $0.status, headers: $0.headers, text: String(buffer: $0.body)) }
            expectError(duplicate, "invalid_request")
            // JSON instead of a form.
            let json = try await client.execute(
                uri: "/token", method: .post, headers: [.contentType: "application/json"], body: .init(string: "{\"grant_type\":\"client_credentials\"}")
            ) { Reply(status: $0.status, headers: $0.headers, text: String(buffer: $0.body)) }
            expectError(json, "invalid_request")
            // Unknown endpoints answer JSON with the request id.
            let missing = try await client.send(.get, "/nowhere", headers: [HTTPField.Name("X-Request-Id")!: "trace-123"])
            #expect(missing.status == .notFound)
            #expect(missing.string("request_id") == "trace-123")
            #expect(missing.headers[HTTPField.Name("X-Request-Id")!] == "trace-123")
        }
    }

    @Test func publicClientsCannotUseConfidentialGrants() async throws {
        try await withAuthServer { client, _, _ in
            let reply = try await client.token([("grant_type", "client_credentials"), ("client_id", "demo-spa")])
            expectError(reply, "unauthorized_client")
        }
    }

    @Test func passwordGrantAndThrottling() async throws {
        try await withAuthServer { client, clock, store in
            let auth = ("demo-web", "demo-web-secret")
            let ok = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: auth)
            #expect(ok.status == .ok)
            #expect(ok.string("refresh_token") != nil)
            let user = try await store.user(username: "alice")
            #expect(try await store.token(TokenLocator(token: ok.string("access_token") ?? "")!)?.userID == user?.id)

            expectError(try await client.token([("grant_type", "password"), ("username", "alice")], basic: auth), "invalid_request")
            for _ in 0..<5 {
                expectError(try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "guess")], basic: auth), "invalid_grant")
            }
            // Throttled now: even the right password waits, and Retry-After says how long.
            let throttled = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: auth)
            expectError(throttled, "invalid_grant")
            #expect(throttled.headers[.retryAfter] == "1")
            // Another user is not affected by alice's throttle ... but the same address is, after its own failures.
            clock.advance(2)
            let later = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: auth)
            #expect(later.status == .ok, "\(later.text)")
            // Unknown users fail the same way as wrong passwords.
            let unknown = try await client.token([("grant_type", "password"), ("username", "mallory"), ("password", "x")], basic: auth)
            expectError(unknown, "invalid_grant")
            #expect(unknown.string("error_description") == "the username or password is wrong")
        }
    }

    @Test func refreshRotationGraceAndReuseDetection() async throws {
        try await withAuthServer { client, clock, store in
            let auth = ("demo-web", "demo-web-secret")
            let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: auth)
            let r1 = try #require(first.string("refresh_token"))

            let second = try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1), ("scope", "orders:read")], basic: auth)
            #expect(second.status == .ok)
            #expect(second.string("scope") == "orders:read")
            let r2 = try #require(second.string("refresh_token"))
            #expect(r2 != r1)

            // A concurrent refresh with r1 within the 2 s grace still works.
            clock.advance(1)
            let concurrent = try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1)], basic: auth)
            #expect(concurrent.status == .ok, "\(concurrent.text)")

            // Widening the scope is refused.
            expectError(try await client.token([("grant_type", "refresh_token"), ("refresh_token", r2), ("scope", "orders:read orders:write")], basic: auth), "invalid_scope")

            // After the grace, r1 again is reuse: the whole family dies, r2 and the access tokens with it.
            clock.advance(5)
            expectError(try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1)], basic: auth), "invalid_grant")
            expectError(try await client.token([("grant_type", "refresh_token"), ("refresh_token", r2)], basic: auth), "invalid_grant")
            #expect(try await store.token(TokenLocator(token: second.string("access_token") ?? "")!)?.revoked == true)
            #expect(try await store.token(TokenLocator(token: first.string("access_token") ?? "")!)?.revoked == true)

            // Another client cannot use someone else's refresh token.
            let other = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: auth)
            expectError(try await client.token([("grant_type", "refresh_token"), ("refresh_token", other.string("refresh_token") ?? "")], basic: ("demo-service", "demo-service-secret")), "unauthorized_client")
        }
    }

    @Test func refreshTokensExpireAfterIdleLifetime() async throws {
        try await withAuthServer(configure: { $0.tokens.refreshTokenIdleLifetime = 100 }) { client, clock, _ in
            let auth = ("demo-web", "demo-web-secret")
            let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: auth)
            let second = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: auth)
            clock.advance(99)
            // Just before the limit: accepted (so the refusal below is the idle lifetime's, not a refusal of every refresh).
            let renewed = try await client.token([("grant_type", "refresh_token"), ("refresh_token", first.string("refresh_token") ?? "")], basic: auth)
            #expect(renewed.status == .ok, "\(renewed.text)")
            #expect(renewed.string("refresh_token") != nil)
            clock.advance(2)
            expectError(try await client.token([("grant_type", "refresh_token"), ("refresh_token", second.string("refresh_token") ?? "")], basic: auth), "invalid_grant")
        }
    }

    @Test func concurrentTokenRequestsAreAllPersisted() async throws {
        try await withAuthServer { client, _, store in
            let tokens = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret")).string("access_token")
                    }
                }
                return try await group.reduce(into: [String]()) { if let token = $1 { $0.append(token) } }
            }
            #expect(tokens.count == 64)
            #expect(Set(tokens).count == 64)
            for token in tokens { #expect(try await store.token(TokenLocator(token: token)!) != nil) }
        }
    }
}
