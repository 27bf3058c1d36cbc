import Foundation
import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// Clients registered with `access_token_format: jwt`, and the lifetime of the JWTs token exchange mints.
@Suite struct JWTAccessTokenTests {
    static let audience = "http://127.0.0.1:8080"
    let gateway = ("gatehouse-gateway", "gatehouse-gateway-secret")
    let jwtClient = ("demo-jwt", "demo-jwt-secret")

    static func addJWTClient(_ configuration: inout AuthServerConfiguration) {
        configuration.clients.append(
            ClientRegistration(
                id: "demo-jwt", type: .confidential, secret: .plaintext("demo-jwt-secret"), grants: [.clientCredentials],
                scopes: ["orders:read", "orders:write"], redirectURIs: [], audiences: [audience], defaultScopes: ["orders:read", "orders:write"],
                accessTokenFormat: .jwt
            )
        )
    }

    func introspect(_ client: any TestClientProtocol, _ token: String) async throws -> Reply {
        let headers: HTTPFields = [.authorization: "Basic " + Data("\(gateway.0):\(gateway.1)".utf8).base64EncodedString()]
        return try await client.send(.post, "/introspect", headers: headers, form: [("token", token)])
    }

    func verifier(_ client: any TestClientProtocol) async throws -> JWTVerifier {
        try await JWTVerifier(jwksJSON: try await client.send(.get, "/.well-known/jwks.json").text)
    }

    @Test func aJWTFormatClientGetsAnRFC9068AccessTokenVerifiableWithTheJWKS() async throws {
        try await withAuthServer(configure: Self.addJWTClient) { client, clock, _ in
            let reply = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: jwtClient)
            #expect(reply.status == .ok, "\(reply.text)")
            #expect(reply.string("token_type") == "Bearer")
            #expect(reply.json["expires_in"] as? Int == 3600)
            let jwt = try #require(reply.string("access_token"))
            let header = try JWSHeader(token: jwt)
            #expect(header.typ == "at+jwt")
            let claims = try await verifier(client).verifyAccessToken(
                jwt, policy: .init(issuers: ["http://127.0.0.1:9000"], audiences: [Self.audience]), now: clock.now()
            )
            #expect(claims.sub == "demo-jwt")
            #expect(claims.client_id == "demo-jwt")
            #expect(claims.scope == "orders:read")
            #expect(claims.aud == [Self.audience])
            #expect(claims.act == nil)  // the client's own token, not one minted for a backend
            #expect(claims.exp == claims.iat + 3600)
            #expect(!jwt.contains("\"act\""))

            // Self-contained (no row): introspection describes it from its signature, revocation makes it inactive
            // there (local verifiers accept it until exp, as README says).
            let active = try await introspect(client, jwt)
            #expect(active.json["active"] as? Bool == true)
            #expect(active.string("client_id") == "demo-jwt")
            #expect(active.string("scope") == "orders:read")
            #expect(active.json["exp"] as? Int == claims.exp)
            // A tampered JWT (the same jti, another signature) does not verify.
            #expect(try await introspect(client, String(jwt.dropLast(2)) + "AA").json["active"] as? Bool == false)
            let revoked = try await client.send(
                .post, "/revoke", headers: [.authorization: "Basic " + Data("demo-jwt:demo-jwt-secret".utf8).base64EncodedString()], form: [("token", jwt)]
            )
            #expect(revoked.status == .ok)
            #expect(try await introspect(client, jwt).text == "{\"active\":false}")

            // Opaque stays the default for everyone else.
            let opaque = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            #expect(TokenLocator(token: opaque.string("access_token") ?? "") != nil)
        }
    }

    @Test func anExchangedJWTNamesTheCallerAndLivesNoLongerThanTheExchangeLifetime() async throws {
        try await withAuthServer(configure: { $0.tokens.exchangeJWTLifetime = 45 }) { client, clock, _ in
            let user = try await client.token([("grant_type", "password"), ("username", "alice"), ("password", "alice-password")], basic: ("demo-web", "demo-web-secret"))
            let opaque = try #require(user.string("access_token"))
            let reply = try await client.token(
                [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", opaque), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")],
                basic: gateway
            )
            #expect(reply.status == .ok, "\(reply.text)")
            #expect(reply.json["expires_in"] as? Int == 45)
            let claims = try await verifier(client).verifyAccessToken(try #require(reply.string("access_token")), policy: .init(issuers: [], audiences: []), now: clock.now())
            #expect(claims.act?.sub == "gatehouse-gateway")
            #expect(claims.client_id == "demo-web")
            #expect(claims.exp - claims.iat == 45)

            // Never longer than the subject token either.
            clock.advance(3600 - 10)
            let late = try await client.token(
                [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", opaque), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")],
                basic: gateway
            )
            #expect(late.json["expires_in"] as? Int == 10)
        }
    }
}
