import Foundation
import GatehouseServiceAuth
import GatehouseTokens
import JWTKit
import NIOConcurrencyHelpers
import Testing

/// The backend-side verifier, request by request: what a service behind the gateway answers.
@Suite struct ServiceTokenVerifierTests {
    let support = RemoteJWKSVerifierTests()

    func makeVerifier(_ endpoint: FakeJWKSEndpoint, _ clock: ManualSeconds) -> ServiceTokenVerifier {
        ServiceTokenVerifier(
            configuration: .init(jwksURL: "http://127.0.0.1:1/unused", issuer: "https://auth.example", audiences: ["api"]),
            clock: { clock.now() }, fetcher: { try await endpoint.fetch() }
        )
    }

    @Test func acceptsAGatewayJWTAndChecksScopes() async throws {
        let endpoint = FakeJWKSEndpoint()
        let clock = ManualSeconds()
        let key = try SigningKey.generate(.es256)
        endpoint.publish(key)
        let verifier = makeVerifier(endpoint, clock)
        let token = try await support.sign(key, now: Int(clock.now()))
        let claims = try await verifier.verify(authorization: ["Bearer " + token], requiring: .init(allOf: ["orders:read"])).get()
        #expect(claims.client_id == "c")
        let refused = await verifier.verify(authorization: ["Bearer " + token], requiring: .init(allOf: ["orders:write"]))
        #expect(refused == .failure(.init(.insufficientScope, "the token lacks a required scope", scope: "orders:write")))
        guard case .failure(let rejection) = refused else { return }
        #expect(rejection.status == 403)
        #expect(rejection.challenge(realm: "orders") == #"Bearer realm="orders", error="insufficient_scope", error_description="the token lacks a required scope", scope="orders:write""#)
        #expect(await verifier.fetches == 1)
    }

    @Test func refusesMissingMalformedTamperedWrongAudienceExpiredAndAlgNone() async throws {
        let endpoint = FakeJWKSEndpoint()
        let clock = ManualSeconds()
        let key = try SigningKey.generate(.es256)
        endpoint.publish(key)
        let verifier = makeVerifier(endpoint, clock)
        let now = Int(clock.now())

        func code(_ authorization: [String]) async -> ServiceTokenVerifier.Rejection.Code? {
            if case .failure(let rejection) = await verifier.verify(authorization: authorization) { return rejection.code }
            return nil
        }
        #expect(await code([]) == .missingToken)
        #expect(await code(["Basic dXNlcjpwYXNz"]) == .missingToken)
        #expect(await code(["Bearer a", "Bearer b"]) == .invalidRequest)
        #expect(await code(["Bearer tok\"en"]) == .invalidRequest)

        let good = try await support.sign(key, now: now)
        #expect(await code(["Bearer " + good]) == nil)
        let parts = good.split(separator: ".")
        var payload = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(parts[1])!)) as! [String: Any]
        payload["scope"] = "orders:read orders:write"
        let tampered = "\(parts[0]).\(Base64URL.encode(try JSONSerialization.data(withJSONObject: payload))).\(parts[2])"
        #expect(await code(["Bearer " + tampered]) == .invalidToken)
        #expect(await code(["Bearer " + (try await support.sign(key, now: now, aud: "elsewhere"))]) == .invalidToken)
        let none = Base64URL.encode(Array("{\"alg\":\"none\",\"kid\":\"\(key.kid)\",\"typ\":\"at+jwt\"}".utf8))
        #expect(await code(["Bearer \(none).\(parts[1])."]) == .invalidToken)
        // Signed by a key the authorization server never published.
        #expect(await code(["Bearer " + (try await support.sign(try SigningKey.generate(.es256), now: now))]) == .invalidToken)
        // Expired: 600 s lifetime plus the 30 s skew.
        clock.advance(631)
        #expect(await code(["Bearer " + good]) == .invalidToken)
    }

    @Test func anUnreachableKeySetIsNotTheTokensFault() async throws {
        let clock = ManualSeconds()
        let key = try SigningKey.generate(.es256)
        let verifier = ServiceTokenVerifier(
            configuration: .init(jwksURL: "http://127.0.0.1:1/jwks", issuer: "https://auth.example", audiences: ["api"]),
            clock: { clock.now() }
        )
        let result = await verifier.verify(authorization: ["Bearer " + (try await support.sign(key, now: Int(clock.now())))])
        guard case .failure(let rejection) = result else {
            Issue.record("expected a rejection")
            return
        }
        #expect(rejection.code == .keysUnavailable)
        #expect(rejection.status == 503)
        #expect(rejection.challenge(realm: "x") == nil)
    }
}
