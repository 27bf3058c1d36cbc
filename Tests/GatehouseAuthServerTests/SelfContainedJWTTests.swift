import Foundation
import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import GatehouseAuthServer

/// client_credentials JWTs are self-contained: no `tokens` row, introspection and exchange answer from the
/// signature, revocation lists the `jti`, and the client's registration (its incarnation) bounds them.
@Suite struct SelfContainedJWTTests {
    let gateway = ("gatehouse-gateway", "gatehouse-gateway-secret")
    let jwtClient = ("demo-jwt", "demo-jwt-secret")
    static let issuer = "http://127.0.0.1:9000"

    func introspect(_ client: any TestClientProtocol, _ token: String) async throws -> Reply {
        let headers: HTTPFields = [.authorization: "Basic " + Data("\(gateway.0):\(gateway.1)".utf8).base64EncodedString()]
        return try await client.send(.post, "/introspect", headers: headers, form: [("token", token)])
    }

    func isActive(_ client: any TestClientProtocol, _ token: String) async throws -> Bool {
        let reply = try await introspect(client, token)
        #expect(reply.status == .ok, "\(reply.text)")
        return reply.json["active"] as? Bool == true
    }

    func revoke(_ client: any TestClientProtocol, _ token: String, as credentials: (String, String)) async throws -> Reply {
        let headers: HTTPFields = [.authorization: "Basic " + Data("\(credentials.0):\(credentials.1)".utf8).base64EncodedString()]
        return try await client.send(.post, "/revoke", headers: headers, form: [("token", token)])
    }

    func issue(_ client: any TestClientProtocol) async throws -> String {
        let reply = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: jwtClient)
        #expect(reply.status == .ok, "\(reply.text)")
        return try #require(reply.string("access_token"))
    }

    /// An introspector as another replica has it: the same store and keys, nothing cached.
    func replica(of server: AuthorizationServer, clock: ManualClock) -> TokenIntrospector {
        TokenIntrospector(
            store: server.store, directory: ClientDirectory(store: server.store, clock: clock), cache: TokenRecordCache(), users: UsernameCache(),
            clock: clock, keys: server.keys, issuer: Self.issuer, jwts: SelfContainedTokenCache()
        )
    }

    func claims(_ jwt: String) throws -> AccessTokenClaims {
        let payload = try #require(Base64URL.decode(jwt.split(separator: ".")[1]))
        return try JSONDecoder().decode(AccessTokenClaims.self, from: Data(payload))
    }

    @Test func issuingWritesNoRowAndTheTokenIntrospectsActiveWithTheSameMembersAsARow() async throws {
        let captured = NIOLockedValueBox<AuthorizationServer?>(nil)
        try await withAuthServer(configure: JWTAccessTokenTests.addJWTClient, inspect: { server in captured.withLockedValue { $0 = server } }) { client, clock, store in
            let server = try #require(captured.withLockedValue { $0 })
            let before = try await store.tokenCounts()
            var tokens: [String] = []
            for _ in 0..<5 { tokens.append(try await issue(client)) }
            #expect(try await store.tokenCounts() == before, "a self-contained JWT wrote a row")
            #expect(Set(tokens).count == 5)
            let first = try self.claims(tokens[0])
            #expect(first.jti.hasPrefix("sc.") && first.jti.split(separator: ".").count == 3)
            #expect(Int64(first.jti.prefix { $0 != "." }) == nil, "the jti must not name a row")

            let reply = try await introspect(client, tokens[0])
            #expect(reply.json["active"] as? Bool == true)
            #expect(reply.string("client_id") == "demo-jwt")
            #expect(reply.string("scope") == "orders:read")
            #expect(reply.string("sub") == "demo-jwt")
            #expect(reply.string("iss") == Self.issuer)
            #expect(reply.string("jti") == first.jti)
            #expect(reply.string("token_type") == "Bearer")
            #expect(reply.json["exp"] as? Int == first.exp)
            #expect(reply.json["iat"] as? Int == first.iat)
            #expect(reply.json["aud"] as? [String] == [JWTAccessTokenTests.audience])

            // Another replica (nothing cached) answers from the signature and the store, and agrees.
            let other = replica(of: server, clock: clock)
            #expect(other.activeTokenFromMemory(tokens[1]) == nil, "not verified there yet: the async path must answer")
            let found = try #require(try await other.activeToken(tokens[1]))
            let secondJTI = try self.claims(tokens[1]).jti
            #expect(found.record.clientID == "demo-jwt" && found.record.scope == "orders:read" && found.selfContained?.jti == secondJTI)
            #expect(other.activeTokenFromMemory(tokens[1])??.selfContained?.jti == found.selfContained?.jti, "verified once, then from memory")

            // The phantom-token exchange takes it as subject, as it took the row-backed JWT.
            let exchanged = try await client.token(
                [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", tokens[2]), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")],
                basic: gateway
            )
            #expect(exchanged.status == .ok, "\(exchanged.text)")
            let minted = try self.claims(try #require(exchanged.string("access_token")))
            let subjectExp = try self.claims(tokens[2]).exp
            #expect(minted.client_id == "demo-jwt" && minted.act?.sub == "gatehouse-gateway" && minted.exp <= subjectExp)
            // The exchanged JWT is not a client credential: it does not introspect active.
            #expect(try await isActive(client, try #require(exchanged.string("access_token"))) == false)
            #expect(try await store.tokenCounts() == before)
        }
    }

    @Test func revokedItIsInactiveHereAtOnceAtAReplicaWithinTheCacheTTLAndListedUntilThePurge() async throws {
        let captured = NIOLockedValueBox<AuthorizationServer?>(nil)
        try await withAuthServer(configure: JWTAccessTokenTests.addJWTClient, inspect: { server in captured.withLockedValue { $0 = server } }) { client, clock, store in
            let server = try #require(captured.withLockedValue { $0 })
            let token = try await issue(client)
            let other = replica(of: server, clock: clock)
            #expect(try await other.activeToken(token) != nil)  // cached at the replica, fresh for 5 s

            // Another client's revocation changes nothing (RFC 7009 §2.1) and reveals nothing.
            #expect(try await revoke(client, token, as: ("demo-service", "demo-service-secret")).status == .ok)
            #expect(try await store.tokenCounts().jwtRevocations == 0)
            #expect(try await isActive(client, token))

            #expect(try await revoke(client, token, as: jwtClient).status == .ok)
            #expect(try await revoke(client, token, as: jwtClient).status == .ok)  // idempotent
            #expect(try await store.tokenCounts().jwtRevocations == 1)
            let jti = try self.claims(token).jti
            #expect(try await store.isJWTRevoked(jti: jti))
            #expect(try await isActive(client, token) == false, "the revoking process answers at once")
            #expect(try await store.tokenCounts().tokens == 0)

            // The replica re-reads the revocation list when its entry is 5 s old.
            #expect(try await other.activeToken(token) != nil)
            clock.advance(5)
            #expect(other.activeTokenFromMemory(token) == nil, "stale: the async path must ask the store")
            #expect(try await other.activeToken(token) == nil)
            #expect(other.activeTokenFromMemory(token) == .some(nil))

            // Exchange refuses it too.
            let exchanged = try await client.token(
                [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", token), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")],
                basic: gateway
            )
            #expect(exchanged.status == .badRequest && exchanged.string("error") == "invalid_request", "\(exchanged.text)")

            // The list keeps the jti while the token could be presented, and no longer.
            #expect(try await store.purgeExpired(now: clock.now()) == 0)
            #expect(try await store.tokenCounts().jwtRevocations == 1)
            clock.advance(3600)
            #expect(try await isActive(client, token) == false)  // expired by now
            // ... and still listed for `jwtRevocationRetention` s past its expiry (replicas' clocks differ by seconds).
            #expect(try await store.purgeExpired(now: clock.now()) == 0)
            clock.advance(jwtRevocationRetention)
            #expect(try await store.purgeExpired(now: clock.now()) == 1)
            #expect(try await store.tokenCounts().jwtRevocations == 0)
            #expect(try await isActive(client, token) == false)  // expired now in any case
        }
    }

    @Test func expiredWrongIssuerForeignKeyTamperedAndExchangedJWTsAreInactive() async throws {
        let captured = NIOLockedValueBox<AuthorizationServer?>(nil)
        try await withAuthServer(configure: JWTAccessTokenTests.addJWTClient, inspect: { server in captured.withLockedValue { $0 = server } }) { client, clock, _ in
            let server = try #require(captured.withLockedValue { $0 })
            let token = try await issue(client)
            let genuine = try self.claims(token)
            let incarnation = String(genuine.jti.split(separator: ".")[1])
            func forged(iss: String = Self.issuer, exp: Int? = nil) -> AccessTokenClaims {
                AccessTokenClaims(
                    iss: iss, sub: "demo-jwt", aud: genuine.aud, exp: exp ?? clock.now() + 600, iat: clock.now(), nbf: clock.now(),
                    jti: JWTAccessToken.selfContainedJTI(incarnation: incarnation), client_id: "demo-jwt", scope: "orders:read", auth_time: nil
                )
            }
            // The premise: a JWT signed with this server's key, right issuer and incarnation, is active.
            #expect(try await isActive(client, try server.keys.sign(forged(), type: AccessTokenClaims.type)))

            #expect(try await isActive(client, try server.keys.sign(forged(iss: "https://other.example"), type: AccessTokenClaims.type)) == false)
            #expect(try await isActive(client, try server.keys.sign(forged(), type: "JWT")) == false, "typ must be at+jwt")

            // Signed with a key of another server (same claims, same algorithm).
            var template = Array("/tmp/gatehouse-foreign-XXXXXX".utf8CString)
            let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let foreign = KeyManager(directory: KeyDirectory(path: directory), algorithm: .es256, policy: .init(), clock: clock, logger: Logger(label: "foreign"))
            try await foreign.reload()
            #expect(try await isActive(client, try foreign.sign(forged(), type: AccessTokenClaims.type)) == false)

            // Tampered: the payload changed (a wider scope), the signature kept.
            let parts = token.split(separator: ".")
            var widened = genuine
            widened.scope = "orders:read orders:write"
            let widenedPayload = Base64URL.encode(Array(try JSONEncoder().encode(widened)))
            let tampered = String(parts[0]) + "." + widenedPayload + "." + String(parts[2])
            #expect(try await isActive(client, tampered) == false)
            #expect(try await isActive(client, String(token.dropLast(2)) + "AA") == false)

            // Expired: by the server's clock, the moment `exp` is reached.
            let shortLived = try server.keys.sign(forged(exp: clock.now() + 10), type: AccessTokenClaims.type)
            #expect(try await isActive(client, shortLived))
            clock.advance(10)
            #expect(try await isActive(client, shortLived) == false)
            #expect(try await isActive(client, token))  // the real one lives on
        }
    }

    @Test func removingTheClientEndsItsTokensAndRegisteringTheIdAgainDoesNotReviveThem() async throws {
        let captured = NIOLockedValueBox<AuthorizationServer?>(nil)
        try await withAuthServer(configure: JWTAccessTokenTests.addJWTClient, inspect: { server in captured.withLockedValue { $0 = server } }) { client, clock, store in
            let server = try #require(captured.withLockedValue { $0 })
            let token = try await issue(client)
            #expect(try await isActive(client, token))
            // A restart re-registers the configured clients: the incarnation, and so the token, survive it.
            try await server.registerConfiguredClientsAndUsers()
            #expect(try await isActive(client, token))

            let registration = try #require(try await store.client(id: "demo-jwt"))
            #expect(try await store.removeClient(id: "demo-jwt"))
            server.directory.invalidate()  // what `gatehouse clients remove` reaches within the directory's 5 s
            #expect(try await isActive(client, token) == false)

            // The same id (and secret) registered again: a new registration, whose new tokens work and old ones do not.
            var again = registration
            again.incarnation = ClientRecord.newIncarnation()
            try await store.upsertClient(again)
            server.directory.invalidate()
            let fresh = try await issue(client)
            #expect(try await isActive(client, fresh))
            #expect(try await isActive(client, token) == false)
            clock.advance(6)  // nothing cached any more: the same answers from the store
            #expect(try await isActive(client, fresh))
            #expect(try await isActive(client, token) == false)
            #expect(try await replica(of: server, clock: clock).activeToken(token) == nil)
        }
    }
}
