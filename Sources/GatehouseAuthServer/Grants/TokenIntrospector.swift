import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import JWTKit
import NIOConcurrencyHelpers

/// What introspection found for a token (RFC 7662 §2.2).
struct IntrospectedToken: Sendable, Equatable {
    var record: TokenRecord
    var client: ClientRecord
    var username: String?

    /// `sub`: the user's id, or the client's for client_credentials tokens.
    var subject: String { record.userID ?? record.clientID }
}

/// Decides whether a presented token is active and gathers its metadata; shared by introspection and exchange.
struct TokenIntrospector: Sendable {
    let store: any AuthStore
    let directory: ClientDirectory
    let cache: TokenRecordCache
    let users: UsernameCache
    let clock: any AuthClock

    /// The token's record if it is active: known, hash matching, not revoked, not expired, its client still
    /// registered, and (for refresh tokens) not rotated away. Everything else is simply inactive.
    func activeToken(_ presented: String) async throws -> IntrospectedToken? {
        guard let locator = JWTAccessToken.locator(presented: presented) else { return nil }
        let now = clock.now()
        var record = cache.get(locator.id, now: now)
        if record == nil, let stored = try await store.token(locator) {
            cache.put([stored], now: now)
            record = stored
        }
        guard let record, Self.isActive(record, locator: locator, now: now) else { return nil }
        guard let client = try await directory.client(id: record.clientID) else { return nil }
        var username: String?
        if let userID = record.userID {
            guard let name = try await users.username(id: userID, store: store, now: now) else { return nil }  // user removed
            username = name
        }
        return IntrospectedToken(record: record, client: client, username: username)
    }

    /// The record matches the presented token (constant-time hash comparison), is not revoked or expired, and a
    /// refresh token has not been rotated away or outlived its family.
    static func isActive(_ record: TokenRecord, locator: TokenLocator, now: Int) -> Bool {
        guard SecureToken.constantTimeEquals(record.tokenHash, locator.hash), !record.revoked, now < record.expiresAt else { return false }
        if record.kind == .refresh {
            return record.rotatedAt == nil && now < (record.familyExpiresAt ?? Int.max)
        }
        return true
    }

    /// `activeToken` from memory only: nil when the store must be asked (record, client or user not cached);
    /// `.some(nil)` when the token is known to be inactive.
    func activeTokenFromMemory(_ presented: String) -> IntrospectedToken?? {
        guard let locator = JWTAccessToken.locator(presented: presented) else { return .some(nil) }
        let now = clock.now()
        guard let record = cache.get(locator.id, now: now) else { return nil }
        guard Self.isActive(record, locator: locator, now: now) else { return .some(nil) }
        guard let cachedClient = directory.cachedClient(id: record.clientID) else { return nil }
        guard let client = cachedClient else { return .some(nil) }
        var username: String?
        if let userID = record.userID {
            guard let cachedName = users.cachedUsername(id: userID, now: now) else { return nil }
            guard let name = cachedName else { return .some(nil) }  // user removed
            username = name
        }
        return .some(IntrospectedToken(record: record, client: client, username: username))
    }
}

/// User id → username, for introspection responses (users change rarely; entries are re-read after a minute).
final class UsernameCache: Sendable {
    private let entries = NIOLockedValueBox([String: (name: String?, at: Int)]())

    /// From memory: nil when not cached (or stale); `.some(nil)` for a user known to be gone.
    func cachedUsername(id: String, now: Int) -> String?? {
        guard let entry = entries.withLockedValue({ $0[id] }), now - entry.at < 60 else { return nil }
        return .some(entry.name)
    }

    func username(id: String, store: any AuthStore, now: Int) async throws -> String? {
        if let entry = entries.withLockedValue({ $0[id] }), now - entry.at < 60 { return entry.name }
        let name = try await store.user(id: id)?.username
        entries.withLockedValue { entries in
            if entries.count > 100_000 { entries.removeAll(keepingCapacity: true) }
            entries[id] = (name, now)
        }
        return name
    }
}

/// RFC 7662 members of an active token, also the `token_introspection` claim of RFC 9701 responses.
struct IntrospectionClaims: Codable, Sendable, Equatable {
    var active: Bool
    var scope: String?
    var client_id: String?
    var username: String?
    var token_type: String?
    var exp: Int?
    var iat: Int?
    var nbf: Int?
    var sub: String?
    var aud: [String]?
    var iss: String?
    var jti: String?

    static let inactive = IntrospectionClaims(active: false)

    init(active: Bool, scope: String? = nil, client_id: String? = nil, username: String? = nil, token_type: String? = nil, exp: Int? = nil, iat: Int? = nil, nbf: Int? = nil, sub: String? = nil, aud: [String]? = nil, iss: String? = nil, jti: String? = nil) {
        self.active = active
        self.scope = scope
        self.client_id = client_id
        self.username = username
        self.token_type = token_type
        self.exp = exp
        self.iat = iat
        self.nbf = nbf
        self.sub = sub
        self.aud = aud
        self.iss = iss
        self.jti = jti
    }

    init(_ token: IntrospectedToken, issuer: String, audiences: [String]) {
        self.init(
            active: true, scope: token.record.scope, client_id: token.record.clientID, username: token.username,
            token_type: token.record.kind == .access ? "Bearer" : "refresh_token", exp: token.record.expiresAt,
            iat: token.record.issuedAt, nbf: token.record.issuedAt, sub: token.subject, aud: audiences, iss: issuer,
            jti: String(token.record.id)
        )
    }

    /// The JSON body, written without Foundation (this is the hot path of introspection).
    var json: String { String(decoding: jsonBytes, as: UTF8.self) }

    static let inactiveBytes = Array("{\"active\":false}".utf8)

    var jsonBytes: [UInt8] {
        guard active else { return Self.inactiveBytes }
        var writer = JSONWriter()
        writer.add("active", true)
        writer.add("scope", scope)
        writer.add("client_id", client_id)
        writer.add("username", username)
        writer.add("token_type", token_type)
        writer.add("exp", exp)
        writer.add("iat", iat)
        writer.add("nbf", nbf)
        writer.add("sub", sub)
        if let aud { writer.add("aud", aud) }
        writer.add("iss", iss)
        writer.add("jti", jti)
        return writer.finishBytes()
    }
}

/// The payload of an RFC 9701 JWT introspection response.
struct IntrospectionResponseClaims: JWTPayload {
    var iss: String
    var aud: String
    var iat: Int
    var token_introspection: IntrospectionClaims

    static let type = "token-introspection+jwt"

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
