import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import GatehouseAuthServer

/// The database unreachable (a PostgreSQL restart): the endpoints answer a clean 503 with `Retry-After` and, on
/// the token endpoint, RFC 6749 `temporarily_unavailable` — never a 500 or the store's message — and work again
/// as soon as the store does.
@Suite struct StoreOutageTests {
    static let gateway = ("gatehouse-gateway", "gatehouse-gateway-secret")

    func expectUnavailable(_ reply: Reply, _ comment: Comment? = nil) {
        #expect(reply.status == .serviceUnavailable, comment)
        #expect(reply.headers[.retryAfter] == String(OAuthError.storeUnavailableRetryAfter), comment)
        #expect(reply.string("error") == "temporarily_unavailable", comment)
        #expect(!reply.text.contains("SQLSTATE") && !reply.text.contains("PostgreSQL"), comment)
    }

    @Test func tokenIntrospectionAndRevocationAnswer503WhileTheStoreIsDownAndRecover() async throws {
        let outage = OutageSwitch()
        try await withAuthServer(wrapStore: { OutageStore(base: $0, outage: outage) }) { client, _, _ in
            // Up: a token is issued (the premise of the comparison below).
            let before = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: ("demo-service", "demo-service-secret"))
            #expect(before.status == .ok)

            outage.set(true)
            // The clients are cached for a few seconds, so the token endpoint reaches the store when it stores.
            expectUnavailable(try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: ("demo-service", "demo-service-secret")), "token")
            // A token this server never saw must be looked up: the store is asked.
            let unknown = TokenLocator.make(id: 987_654).token
            let headers: HTTPFields = [.authorization: "Basic " + Data("\(Self.gateway.0):\(Self.gateway.1)".utf8).base64EncodedString()]
            expectUnavailable(try await client.send(.post, "/introspect", headers: headers, form: [("token", unknown)]), "introspect")
            expectUnavailable(try await client.send(.post, "/revoke", headers: headers, form: [("token", unknown)]), "revoke")
            #expect(outage.failedCalls > 0)

            outage.set(false)
            let after = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:read")], basic: ("demo-service", "demo-service-secret"))
            #expect(after.status == .ok)
        }
    }
}

/// Whether the wrapped store is "down", and how many calls it refused.
final class OutageSwitch: Sendable {
    private let state = NIOLockedValueBox((down: false, failed: 0))

    func set(_ down: Bool) { state.withLockedValue { $0.down = down } }
    var failedCalls: Int { state.withLockedValue { $0.failed } }

    func check() throws {
        let down = state.withLockedValue { state in
            if state.down { state.failed += 1 }
            return state.down
        }
        if down { throw StoreError(code: .unavailable, message: "PostgreSQL unreachable: connection refused (test)") }
    }
}

/// The SQLite store, failing every call with `.unavailable` while the switch is down.
struct OutageStore: AuthStore {
    let base: SQLiteAuthStore
    let outage: OutageSwitch

    func upsertClient(_ client: ClientRecord) async throws { try outage.check(); try await base.upsertClient(client) }
    func client(id: String) async throws -> ClientRecord? { try outage.check(); return try await base.client(id: id) }
    func listClients() async throws -> [ClientRecord] { try outage.check(); return try await base.listClients() }
    func removeClient(id: String) async throws -> Bool { try outage.check(); return try await base.removeClient(id: id) }
    func removeConfigurationClients(notIn ids: Set<String>) async throws { try outage.check(); try await base.removeConfigurationClients(notIn: ids) }
    func upsertUser(_ user: UserRecord) async throws { try outage.check(); try await base.upsertUser(user) }
    func user(username: String) async throws -> UserRecord? { try outage.check(); return try await base.user(username: username) }
    func user(id: String) async throws -> UserRecord? { try outage.check(); return try await base.user(id: id) }
    func removeUser(username: String) async throws -> Bool { try outage.check(); return try await base.removeUser(username: username) }
    func insertCode(_ code: AuthorizationCodeRecord) async throws { try outage.check(); try await base.insertCode(code) }
    func code(hash: String) async throws -> AuthorizationCodeRecord? { try outage.check(); return try await base.code(hash: hash) }
    func redeemCode(hash: String, at now: Int, issuing tokens: [TokenRecord]) async throws -> CodeRedemption {
        try outage.check()
        return try await base.redeemCode(hash: hash, at: now, issuing: tokens)
    }
    func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws { try outage.check(); try await base.recordCodeReplay(hash: hash, familyID: familyID, at: now) }
    func allocateTokenIDs(_ count: Int) async throws -> [Int64] { try outage.check(); return try await base.allocateTokenIDs(count) }
    func insertTokens(_ tokens: [TokenRecord]) async throws { try outage.check(); try await base.insertTokens(tokens) }
    func token(_ locator: TokenLocator) async throws -> TokenRecord? { try outage.check(); return try await base.token(locator) }
    func markRotated(_ locator: TokenLocator, at now: Int) async throws -> RotationMark { try outage.check(); return try await base.markRotated(locator, at: now) }
    func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark {
        try outage.check()
        return try await base.rotate(locator, at: now, successors: successors)
    }
    func revokeFamily(_ familyID: String) async throws { try outage.check(); try await base.revokeFamily(familyID) }
    func revokeToken(_ locator: TokenLocator) async throws -> Bool { try outage.check(); return try await base.revokeToken(locator) }
    func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws { try outage.check(); try await base.revokeJWT(jti: jti, clientID: clientID, expiresAt: expiresAt) }
    func isJWTRevoked(jti: String) async throws -> Bool { try outage.check(); return try await base.isJWTRevoked(jti: jti) }
    func tokenCounts() async throws -> StoredTokenCounts { try await base.tokenCounts() }
    func consentedScopes(userID: String, clientID: String) async throws -> Set<String> { try outage.check(); return try await base.consentedScopes(userID: userID, clientID: clientID) }
    func saveConsent(userID: String, clientID: String, scopes: Set<String>, at now: Int) async throws { try outage.check(); try await base.saveConsent(userID: userID, clientID: clientID, scopes: scopes, at: now) }
    func purgeExpired(now: Int) async throws -> Int { try outage.check(); return try await base.purgeExpired(now: now) }
    func ping() async throws { try outage.check(); try await base.ping() }
    func close() async throws {}
}
