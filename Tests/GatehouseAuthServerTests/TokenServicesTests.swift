import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// Introspection, JWT introspection responses, token exchange, revocation and the JWKS over real HTTP.
@Suite struct TokenServicesTests {
    let gateway = ("gatehouse-gateway", "gatehouse-gateway-secret")
    let exchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"

    func introspect(_ client: any TestClientProtocol, _ token: String, as caller: (String, String)? = nil, jwt: Bool = false) async throws -> Reply {
        var headers: HTTPFields = [.authorization: "Basic " + Data("\((caller ?? gateway).0):\((caller ?? gateway).1)".utf8).base64EncodedString()]
        if jwt { headers[.accept] = "application/token-introspection+jwt" }
        return try await client.send(.post, "/introspect", headers: headers, form: [("token", token)])
    }

    func exchange(_ client: any TestClientProtocol, _ token: String, as caller: (String, String)? = nil, extra: [(String, String)] = []) async throws -> Reply {
        try await client.token(
            [("grant_type", exchangeGrant), ("subject_token", token), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), ("requested_token_type", "urn:ietf:params:oauth:token-type:jwt")] + extra,
            basic: caller ?? gateway
        )
    }

    func verifier(_ client: any TestClientProtocol) async throws -> JWTVerifier {
        let jwks = try await client.send(.get, "/.well-known/jwks.json")
        #expect(jwks.headers[.cacheControl] == "public, max-age=300")
        return try await JWTVerifier(jwksJSON: jwks.text)
    }

    @Test func metadataNamesTheNewEndpoints() async throws {
        try await withAuthServer { client, _, _ in
            let metadata = try await client.send(.get, "/.well-known/oauth-authorization-server")
            #expect(metadata.string("introspection_endpoint") == "http://127.0.0.1:9000/introspect")
            #expect(metadata.string("revocation_endpoint") == "http://127.0.0.1:9000/revoke")
            #expect(metadata.string("jwks_uri") == "http://127.0.0.1:9000/.well-known/jwks.json")
            #expect((metadata.json["grant_types_supported"] as? [String])?.contains(exchangeGrant) == true)
            #expect(metadata.json["introspection_signing_alg_values_supported"] as? [String] == ["ES256"])
        }
    }

    @Test func tokensFromEveryGrantIntrospectAsActive() async throws {
        try await withAuthServer { client, _, store in
            let service = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: ("demo-service", "demo-service-secret"))
            let reply = try await introspect(client, service.string("access_token") ?? "")
            #expect(reply.status == .ok)
            #expect(reply.json["active"] as? Bool == true)
            #expect(reply.string("client_id") == "demo-service")
            #expect(reply.string("sub") == "demo-service")
            #expect(reply.string("scope") == "orders:read")
            #expect(reply.string("token_type") == "Bearer")
            #expect(reply.string("iss") == "http://127.0.0.1:9000")
            #expect(reply.json["username"] == nil)
            #expect(reply.json["exp"] as? Int == (reply.json["iat"] as? Int ?? 0) + 3600)

            let user = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: ("demo-web", "demo-web-secret"))
            let alice = try await store.user(username: "alice")
            let active = try await introspect(client, user.string("access_token") ?? "")
            #expect(active.string("username") == "alice")
            #expect(active.string("sub") == alice?.id)
            let refresh = try await introspect(client, user.string("refresh_token") ?? "")
            #expect(refresh.json["active"] as? Bool == true)
            #expect(refresh.string("token_type") == "refresh_token")
        }
    }

    @Test func inactiveTokensSayOnlyInactive() async throws {
        try await withAuthServer { client, clock, _ in
            for token in ["unknown", String(repeating: "A", count: 54), TokenLocator.make(id: 99).token] {
                let reply = try await introspect(client, token)
                #expect(reply.status == .ok)
                #expect(reply.text == "{\"active\":false}")
            }
            let issued = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            let token = try #require(issued.string("access_token"))
            // A forged token with the same row id but other random bits.
            let locator = try #require(TokenLocator(token: token))
            #expect(try await introspect(client, TokenLocator.make(id: locator.id).token).text == "{\"active\":false}")
            // Expiry.
            clock.advance(3601)
            #expect(try await introspect(client, token).text == "{\"active\":false}")
        }
    }

    @Test func revocationOfAccessAndRefreshTokens() async throws {
        try await withAuthServer { client, _, _ in
            let web = ("demo-web", "demo-web-secret")
            let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: web)
            let access = try #require(first.string("access_token"))
            let refresh = try #require(first.string("refresh_token"))
            let rotated = try await client.token([("grant_type", "refresh_token"), ("refresh_token", refresh)], basic: web)
            let newAccess = try #require(rotated.string("access_token"))
            let newRefresh = try #require(rotated.string("refresh_token"))

            // Someone else's token: 200, nothing happens.
            let foreign = try await client.send(.post, "/revoke", headers: [.authorization: "Basic " + Data("demo-service:demo-service-secret".utf8).base64EncodedString()], form: [("token", newAccess)])
            #expect(foreign.status == .ok)
            #expect(try await introspect(client, newAccess).json["active"] as? Bool == true)

            // Revoking one access token leaves the rest.
            let revokeAccess = try await client.send(.post, "/revoke", headers: [.authorization: "Basic " + Data("demo-web:demo-web-secret".utf8).base64EncodedString()], form: [("token", access), ("token_type_hint", "access_token")])
            #expect(revokeAccess.status == .ok)
            #expect(try await introspect(client, access).text == "{\"active\":false}")
            #expect(try await introspect(client, newAccess).json["active"] as? Bool == true)

            // Revoking the refresh token revokes its family: every access token issued from it.
            let revokeRefresh = try await client.send(.post, "/revoke", headers: [.authorization: "Basic " + Data("demo-web:demo-web-secret".utf8).base64EncodedString()], form: [("token", newRefresh)])
            #expect(revokeRefresh.status == .ok)
            #expect(try await introspect(client, newAccess).text == "{\"active\":false}")
            #expect(try await introspect(client, newRefresh).text == "{\"active\":false}")
            #expect(try await client.token([("grant_type", "refresh_token"), ("refresh_token", newRefresh)], basic: web).string("error") == "invalid_grant")

            // Unknown tokens: 200 (RFC 7009 §2.2). No token: invalid_request. No client authentication: 401.
            #expect(try await client.send(.post, "/revoke", headers: [.authorization: "Basic " + Data("demo-web:demo-web-secret".utf8).base64EncodedString()], form: [("token", "nonsense")]).status == .ok)
            #expect(try await client.send(.post, "/revoke", headers: [.authorization: "Basic " + Data("demo-web:demo-web-secret".utf8).base64EncodedString()], form: [("token_type_hint", "access_token")]).string("error") == "invalid_request")
            let anonymous = try await client.send(.post, "/revoke", form: [("token", newAccess)])
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.string("error") == "invalid_client")
        }
    }

    @Test func refreshFamilyRevocationByReuseMakesAccessTokensInactive() async throws {
        try await withAuthServer { client, clock, _ in
            let web = ("demo-web", "demo-web-secret")
            let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: web)
            let refresh = try #require(first.string("refresh_token"))
            let second = try await client.token([("grant_type", "refresh_token"), ("refresh_token", refresh)], basic: web)
            #expect(try await introspect(client, second.string("access_token") ?? "").json["active"] as? Bool == true)
            clock.advance(10)
            _ = try await client.token([("grant_type", "refresh_token"), ("refresh_token", refresh)], basic: web)  // reuse
            #expect(try await introspect(client, second.string("access_token") ?? "").text == "{\"active\":false}")
        }
    }

    @Test func callersMustBeAllowedToIntrospect() async throws {
        try await withAuthServer { client, _, _ in
            let issued = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            let notAllowed = try await introspect(client, issued.string("access_token") ?? "", as: ("demo-service", "demo-service-secret"))
            #expect(notAllowed.status == .unauthorized)
            #expect(notAllowed.string("error") == "invalid_client")
            let wrongSecret = try await introspect(client, issued.string("access_token") ?? "", as: ("gatehouse-gateway", "nope"))
            #expect(wrongSecret.status == .unauthorized)
        }
    }

    @Test func jwtIntrospectionResponseVerifiesAgainstTheJWKS() async throws {
        try await withAuthServer { client, clock, _ in
            let issued = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            let reply = try await introspect(client, issued.string("access_token") ?? "", jwt: true)
            #expect(reply.status == .ok)
            #expect(reply.headers[.contentType] == "application/token-introspection+jwt")
            let verifier = try await verifier(client)
            let payload = try await verifier.verifySignature(reply.text, as: IntrospectionResponseClaims.self, allowedAlgorithms: [.es256], requiredType: "token-introspection+jwt")
            #expect(payload.iss == "http://127.0.0.1:9000")
            #expect(payload.aud == "gatehouse-gateway")
            #expect(payload.iat == clock.now())
            #expect(payload.token_introspection.active)
            #expect(payload.token_introspection.client_id == "demo-service")
            // Inactive tokens in JWT form carry only active=false.
            let inactive = try await introspect(client, "unknown", jwt: true)
            let inactivePayload = try await verifier.verifySignature(inactive.text, as: IntrospectionResponseClaims.self, allowedAlgorithms: [.es256], requiredType: "token-introspection+jwt")
            #expect(inactivePayload.token_introspection == .inactive)
        }
    }

    @Test func tokenExchangeReturnsAVerifiableRFC9068JWT() async throws {
        try await withAuthServer { client, clock, store in
            let user = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password"), ("scope", "orders:read")], basic: ("demo-web", "demo-web-secret"))
            let opaque = try #require(user.string("access_token"))
            let reply = try await exchange(client, opaque)
            #expect(reply.status == .ok, "\(reply.text)")
            #expect(reply.string("issued_token_type") == "urn:ietf:params:oauth:token-type:jwt")
            #expect(reply.string("token_type") == "Bearer")
            let jwt = try #require(reply.string("access_token"))
            let header = try JWSHeader(token: jwt)
            #expect(header.typ == "at+jwt")
            #expect(header.alg == "ES256")
            let verifier = try await verifier(client)
            #expect(header.kid.map { verifier.published[$0] != nil } == true)
            let claims = try await verifier.verifyAccessToken(jwt, policy: .init(issuers: ["http://127.0.0.1:9000"], audiences: ["gatehouse"]), now: clock.now())
            let alice = try await store.user(username: "alice")
            #expect(claims.sub == alice?.id)
            #expect(claims.client_id == "demo-web")
            #expect(claims.scope == "orders:read")
            #expect(claims.aud == ["gatehouse"])
            #expect(claims.auth_time != nil)
            let opaqueExp = try #require(try await introspect(client, opaque).json["exp"] as? Int)
            #expect(claims.exp <= opaqueExp)  // never outlives the opaque token
            #expect(claims.exp == claims.iat + 120)  // exchange_jwt_lifetime (120 s) is the shorter bound here
            #expect(claims.act?.sub == "gatehouse-gateway")  // minted for the backends, on the gateway's call

            // A narrower scope may be asked for; a wider one may not.
            #expect(try await exchange(client, opaque, extra: [("scope", "orders:read")]).status == .ok)
            #expect(try await exchange(client, opaque, extra: [("scope", "orders:write")]).string("error") == "invalid_scope")

            // client_credentials tokens: sub is the client.
            let service = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            let serviceJWT = try #require(try await exchange(client, service.string("access_token") ?? "").string("access_token"))
            let serviceClaims = try await verifier.verifyAccessToken(serviceJWT, policy: .init(issuers: [], audiences: []), now: clock.now())
            #expect(serviceClaims.sub == "demo-service")
            #expect(serviceClaims.auth_time == nil)
        }
    }

    @Test func exchangeReusesAFreshJWTButNeverForARevokedToken() async throws {
        try await withAuthServer { client, clock, _ in
            let web = ("demo-web", "demo-web-secret")
            let user = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: web)
            let opaque = try #require(user.string("access_token"))
            let first = try #require(try await exchange(client, opaque).string("access_token"))
            clock.advance(10)
            #expect(try await exchange(client, opaque).string("access_token") == first)  // reused within 30 s
            #expect(try await exchange(client, opaque, extra: [("scope", "orders:read")]).string("access_token") != first)  // other scope: its own JWT
            clock.advance(25)
            let later = try #require(try await exchange(client, opaque).string("access_token"))
            #expect(later != first)  // minted anew after the reuse period
            // Revocation applies at once, whatever is cached.
            let revoked = try await client.send(.post, "/revoke", headers: [.authorization: "Basic " + Data("demo-web:demo-web-secret".utf8).base64EncodedString()], form: [("token", opaque)])
            #expect(revoked.status == .ok)
            #expect(try await exchange(client, opaque).string("error") == "invalid_request")
        }
    }

    @Test func tokenExchangeRefusals() async throws {
        try await withAuthServer { client, clock, _ in
            let service = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            let opaque = try #require(service.string("access_token"))
            // A client not registered for the exchange grant.
            let notAllowed = try await exchange(client, opaque, as: ("demo-service", "demo-service-secret"))
            #expect(notAllowed.string("error") == "unauthorized_client")
            // Bad subject tokens.
            #expect(try await exchange(client, "garbage").string("error") == "invalid_request")
            let user = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: ("demo-web", "demo-web-secret"))
            #expect(try await exchange(client, user.string("refresh_token") ?? "").string("error") == "invalid_request")  // refresh tokens are not exchanged
            // Wrong token types.
            let wrongType = try await client.token([("grant_type", exchangeGrant), ("subject_token", opaque), ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")], basic: gateway)
            #expect(wrongType.string("error") == "invalid_request")
            let wrongRequested = try await exchange(client, opaque, extra: []).status
            #expect(wrongRequested == .ok)
            let saml = try await client.token([("grant_type", exchangeGrant), ("subject_token", opaque), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), ("requested_token_type", "urn:ietf:params:oauth:token-type:saml2")], basic: gateway)
            #expect(saml.string("error") == "invalid_request")
            #expect(try await exchange(client, opaque, extra: [("audience", "https://elsewhere.example")]).string("error") == "invalid_target")
            // Expired.
            clock.advance(3601)
            #expect(try await exchange(client, opaque).string("error") == "invalid_request")
        }
    }
}
