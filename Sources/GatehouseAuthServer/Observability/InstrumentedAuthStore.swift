import GatehouseStore
import GatehouseTokens

/// A store that times every call into `gatehouse_auth_store_duration_seconds{operation}` and passes it on. Wraps
/// whichever store the server runs on (SQLite, PostgreSQL), so both are measured the same way.
public struct InstrumentedAuthStore: AuthStore {
    public let base: any AuthStore
    let metrics: AuthMetrics

    public init(_ base: any AuthStore, metrics: AuthMetrics) {
        self.base = base
        self.metrics = metrics
    }

    public func upsertClient(_ client: ClientRecord) async throws { try await metrics.store(.upsertClient) { try await base.upsertClient(client) } }
    public func client(id: String) async throws -> ClientRecord? { try await metrics.store(.client) { try await base.client(id: id) } }
    public func listClients() async throws -> [ClientRecord] { try await metrics.store(.listClients) { try await base.listClients() } }
    @discardableResult public func removeClient(id: String) async throws -> Bool { try await metrics.store(.removeClient) { try await base.removeClient(id: id) } }
    public func removeConfigurationClients(notIn ids: Set<String>) async throws {
        try await metrics.store(.removeConfigurationClients) { try await base.removeConfigurationClients(notIn: ids) }
    }

    public func upsertUser(_ user: UserRecord) async throws { try await metrics.store(.upsertUser) { try await base.upsertUser(user) } }
    public func user(username: String) async throws -> UserRecord? { try await metrics.store(.user) { try await base.user(username: username) } }
    public func user(id: String) async throws -> UserRecord? { try await metrics.store(.user) { try await base.user(id: id) } }
    @discardableResult public func removeUser(username: String) async throws -> Bool { try await metrics.store(.removeUser) { try await base.removeUser(username: username) } }

    public func insertCode(_ code: AuthorizationCodeRecord) async throws { try await metrics.store(.insertCode) { try await base.insertCode(code) } }
    public func code(hash: String) async throws -> AuthorizationCodeRecord? { try await metrics.store(.code) { try await base.code(hash: hash) } }
    public func redeemCode(hash: String, at now: Int, issuing tokens: [TokenRecord]) async throws -> CodeRedemption {
        try await metrics.store(.redeemCode) { try await base.redeemCode(hash: hash, at: now, issuing: tokens) }
    }
    public func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws {
        try await metrics.store(.recordCodeReplay) { try await base.recordCodeReplay(hash: hash, familyID: familyID, at: now) }
    }

    public func allocateTokenIDs(_ count: Int) async throws -> [Int64] { try await base.allocateTokenIDs(count) }
    public func ping() async throws { try await metrics.store(.ping) { try await base.ping() } }
    public func insertTokens(_ tokens: [TokenRecord]) async throws { try await metrics.store(.insertTokens) { try await base.insertTokens(tokens) } }
    public func token(_ locator: TokenLocator) async throws -> TokenRecord? { try await metrics.store(.token) { try await base.token(locator) } }
    public func markRotated(_ locator: TokenLocator, at now: Int) async throws -> RotationMark { try await metrics.store(.markRotated) { try await base.markRotated(locator, at: now) } }
    public func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark {
        try await metrics.store(.markRotated) { try await base.rotate(locator, at: now, successors: successors) }
    }
    public func revokeFamily(_ familyID: String) async throws { try await metrics.store(.revokeFamily) { try await base.revokeFamily(familyID) } }
    @discardableResult public func revokeToken(_ locator: TokenLocator) async throws -> Bool { try await metrics.store(.revokeToken) { try await base.revokeToken(locator) } }

    public func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws {
        try await metrics.store(.revokeJWT) { try await base.revokeJWT(jti: jti, clientID: clientID, expiresAt: expiresAt) }
    }
    public func isJWTRevoked(jti: String) async throws -> Bool { try await metrics.store(.isJWTRevoked) { try await base.isJWTRevoked(jti: jti) } }
    public func tokenCounts() async throws -> StoredTokenCounts { try await metrics.store(.tokenCounts) { try await base.tokenCounts() } }

    public func consentedScopes(userID: String, clientID: String) async throws -> Set<String> {
        try await metrics.store(.consentedScopes) { try await base.consentedScopes(userID: userID, clientID: clientID) }
    }
    public func saveConsent(userID: String, clientID: String, scopes: Set<String>, at now: Int) async throws {
        try await metrics.store(.saveConsent) { try await base.saveConsent(userID: userID, clientID: clientID, scopes: scopes, at: now) }
    }

    @discardableResult public func purgeExpired(now: Int) async throws -> Int { try await metrics.store(.purgeExpired) { try await base.purgeExpired(now: now) } }

    public func close() async throws { try await base.close() }
}
