import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import GatehouseAuthServer

/// Authorization-code redemption under concurrency and hostile presentations, over real HTTP.
@Suite struct CodeRedemptionTests {
    static let webRedirect = "http://127.0.0.1:8081/callback"
    let web = ("demo-web", "demo-web-secret")

    /// Stores a fresh code for demo-web and alice (PKCE S256 with the shared test verifier); returns the code.
    func storeCode(_ store: SQLiteAuthStore, clock: ManualClock) async throws -> String {
        let alice = try #require(try await store.user(username: "alice"))
        let code = SecureToken.generate()
        let now = clock.now()
        try await store.insertCode(
            AuthorizationCodeRecord(
                codeHash: SecureToken.hash(code), clientID: "demo-web", userID: alice.id, redirectURI: Self.webRedirect,
                redirectURIWasGiven: true, scope: "orders:read", codeChallenge: challenge, authTime: now, issuedAt: now,
                expiresAt: now + 60, familyID: SecureToken.generate()
            )
        )
        return code
    }

    /// A redemption on a connection of its own (so that several run at once).
    func redeemConcurrently(_ client: any TestClientProtocol, _ code: String) async throws -> Reply {
        try await tokenOnItsOwnConnection(
            port: client.port, [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", Self.webRedirect), ("code_verifier", verifier)],
            basic: web
        )
    }

    func redeem(_ client: any TestClientProtocol, _ code: String, verifier: String = verifier, redirect: String = webRedirect, as caller: (String, String)? = nil) async throws -> Reply {
        try await client.token(
            [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect), ("code_verifier", verifier)],
            basic: caller ?? web
        )
    }

    func isActive(_ client: any TestClientProtocol, _ token: String) async throws -> Bool {
        let headers: HTTPFields = [.authorization: "Basic " + Data("gatehouse-gateway:gatehouse-gateway-secret".utf8).base64EncodedString()]
        let reply = try await client.send(.post, "/introspect", headers: headers, form: [("token", token)])
        #expect(reply.status == .ok)
        return reply.json["active"] as? Bool == true
    }

    /// N redemptions of one code at once: exactly one succeeds, and once all have answered every token it issued
    /// is inactive, whatever the interleaving (several rounds, since the losing requests used to run before the
    /// winner's tokens were stored and leave them active).
    @Test func concurrentRedemptionsLeaveNothingActive() async throws {
        try await withAuthServer { client, clock, store in
            for round in 0..<6 {
                let code = try await storeCode(store, clock: clock)
                let replies = try await withThrowingTaskGroup(of: Reply.self) { group in
                    for _ in 0..<8 { group.addTask { try await redeemConcurrently(client, code) } }
                    return try await group.reduce(into: [Reply]()) { $0.append($1) }
                }
                let successes = replies.filter { $0.status == .ok }
                #expect(successes.count == 1, "round \(round): \(replies.map(\.text))")
                for failure in replies where failure.status != .ok {
                    #expect(failure.status == .badRequest)
                    #expect(failure.string("error") == "invalid_grant")
                }
                for success in successes {
                    let access = try #require(success.string("access_token"))
                    let refresh = try #require(success.string("refresh_token"))
                    #expect(try await isActive(client, access) == false, "round \(round): the winner's access token is still active")
                    #expect(try await isActive(client, refresh) == false, "round \(round): the winner's refresh token is still active")
                }
            }
        }
    }

    /// A failed presentation (another client, a wrong verifier, a wrong redirect URI) is invalid_grant and leaves
    /// the code to the legitimate redemption, which succeeds; its replay by the right client still revokes.
    @Test(arguments: ["another client", "wrong verifier", "wrong redirect"])
    func aFailedRedemptionDoesNotBurnTheCode(kind: String) async throws {
        try await withAuthServer { client, clock, store in
            let code = try await storeCode(store, clock: clock)
            let failed =
                switch kind {
                case "another client": try await redeem(client, code, as: ("no-pkce", "no-pkce-secret"))
                case "wrong verifier": try await redeem(client, code, verifier: String(repeating: "a", count: 43))
                default: try await redeem(client, code, redirect: "http://127.0.0.1:8081/other")
                }
            #expect(failed.status == .badRequest)
            #expect(failed.string("error") == "invalid_grant", "\(failed.text)")

            let legitimate = try await redeem(client, code)
            #expect(legitimate.status == .ok, "\(kind): \(legitimate.text)")
            let access = try #require(legitimate.string("access_token"))
            #expect(try await isActive(client, access))

            // The same failed attempt again, now that the code is used, still revokes nothing.
            if kind != "another client" {
                let again = kind == "wrong verifier"
                    ? try await redeem(client, code, verifier: String(repeating: "a", count: 43))
                    : try await redeem(client, code, redirect: "http://127.0.0.1:8081/other")
                #expect(again.string("error") == "invalid_grant")
                #expect(try await isActive(client, access))
            }

            // A replay by the right client with the right binding revokes what the code issued.
            let replay = try await redeem(client, code)
            #expect(replay.string("error") == "invalid_grant")
            #expect(try await isActive(client, access) == false)
        }
    }
}

extension CodeRedemptionTests {
    /// The last interleaving left once the mark and the tokens commit together, forced: the winning redemption has
    /// stored its tokens but answers only after the losing request has recorded the replay and revoked the family.
    /// Its tokens are revoked in the database (the replay's revocation reached them: they were committed with the
    /// mark) and in this server's token cache, which the winner fills after the revocation (the cache remembers
    /// the revoked family, so they go in revoked and introspect inactive at once, not 5 s later).
    @Test func aReplayThatFinishesBeforeTheWinnerAnswersStillRevokesItsTokens() async throws {
        let gate = ReplayGate()
        try await withAuthServer(wrapStore: { GatedStore(base: $0, gate: gate) }) { client, clock, store in
            let code = try await storeCode(store, clock: clock)
            async let first = redeemConcurrently(client, code)
            async let second = redeemConcurrently(client, code)
            let replies = try await [first, second]
            let successes = replies.filter { $0.status == .ok }
            #expect(successes.count == 1, "\(replies.map(\.text))")
            #expect(replies.filter { $0.string("error") == "invalid_grant" }.count == 1)
            let access = try #require(successes.first?.string("access_token"))
            let refresh = try #require(successes.first?.string("refresh_token"))
            #expect(try await isActive(client, access) == false)
            #expect(try await isActive(client, refresh) == false)
        }
    }
}

/// Opens once a code replay has been recorded (and its revocation has run).
final class ReplayGate: Sendable {
    private let state = NIOLockedValueBox<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLockedValue { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLockedValue { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The SQLite store, except that a winning code redemption returns (its mark and tokens committed) only after a
/// replay was recorded.
struct GatedStore: AuthStore {
    let base: SQLiteAuthStore
    let gate: ReplayGate

    func redeemCode(hash: String, at now: Int, issuing tokens: [TokenRecord]) async throws -> CodeRedemption {
        let result = try await base.redeemCode(hash: hash, at: now, issuing: tokens)
        if case .redeemed = result { await gate.wait() }
        return result
    }

    func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws {
        try await base.recordCodeReplay(hash: hash, familyID: familyID, at: now)
        gate.open()
    }

    func upsertClient(_ client: ClientRecord) async throws { try await base.upsertClient(client) }
    func client(id: String) async throws -> ClientRecord? { try await base.client(id: id) }
    func listClients() async throws -> [ClientRecord] { try await base.listClients() }
    func removeClient(id: String) async throws -> Bool { try await base.removeClient(id: id) }
    func removeConfigurationClients(notIn ids: Set<String>) async throws { try await base.removeConfigurationClients(notIn: ids) }
    func upsertUser(_ user: UserRecord) async throws { try await base.upsertUser(user) }
    func user(username: String) async throws -> UserRecord? { try await base.user(username: username) }
    func user(id: String) async throws -> UserRecord? { try await base.user(id: id) }
    func removeUser(username: String) async throws -> Bool { try await base.removeUser(username: username) }
    func insertCode(_ code: AuthorizationCodeRecord) async throws { try await base.insertCode(code) }
    func code(hash: String) async throws -> AuthorizationCodeRecord? { try await base.code(hash: hash) }
    func insertTokens(_ tokens: [TokenRecord]) async throws { try await base.insertTokens(tokens) }
    func allocateTokenIDs(_ count: Int) async throws -> [Int64] { try await base.allocateTokenIDs(count) }
    func ping() async throws { try await base.ping() }
    func token(_ locator: TokenLocator) async throws -> TokenRecord? { try await base.token(locator) }
    func markRotated(_ locator: TokenLocator, at now: Int) async throws -> RotationMark { try await base.markRotated(locator, at: now) }
    func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark {
        try await base.rotate(locator, at: now, successors: successors)
    }
    func revokeFamily(_ familyID: String) async throws { try await base.revokeFamily(familyID) }
    func revokeToken(_ locator: TokenLocator) async throws -> Bool { try await base.revokeToken(locator) }
    func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws { try await base.revokeJWT(jti: jti, clientID: clientID, expiresAt: expiresAt) }
    func isJWTRevoked(jti: String) async throws -> Bool { try await base.isJWTRevoked(jti: jti) }
    func tokenCounts() async throws -> StoredTokenCounts { try await base.tokenCounts() }
    func consentedScopes(userID: String, clientID: String) async throws -> Set<String> { try await base.consentedScopes(userID: userID, clientID: clientID) }
    func saveConsent(userID: String, clientID: String, scopes: Set<String>, at now: Int) async throws { try await base.saveConsent(userID: userID, clientID: clientID, scopes: scopes, at: now) }
    func purgeExpired(now: Int) async throws -> Int { try await base.purgeExpired(now: now) }
    func close() async throws {}
}
