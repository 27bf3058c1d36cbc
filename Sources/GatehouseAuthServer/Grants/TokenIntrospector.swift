import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import JWTKit
import NIOConcurrencyHelpers

/// What introspection found for a token (RFC 7662 §2.2).
struct IntrospectedToken: Sendable, Equatable {
    /// The token's row, or for a self-contained JWT the same fields read from its verified claims (`id` 0).
    var record: TokenRecord
    var client: ClientRecord
    var username: String?
    /// A self-contained JWT's `jti` and `aud` (nil for a row-backed token: its row id, its client's audiences).
    var selfContained: (jti: String, audiences: [String])?

    static func == (lhs: IntrospectedToken, rhs: IntrospectedToken) -> Bool {
        lhs.record == rhs.record && lhs.client == rhs.client && lhs.username == rhs.username
            && lhs.selfContained?.jti == rhs.selfContained?.jti && lhs.selfContained?.audiences == rhs.selfContained?.audiences
    }

    /// The exchange cache's name for the token: its `jti` or its row id.
    var cacheName: String { selfContained?.jti ?? String(record.id) }

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
    /// Verifies self-contained JWTs (this server's own keys) and names the issuer they must carry.
    let keys: KeyManager
    let issuer: String
    let jwts: SelfContainedTokenCache

    /// The token's record if it is active: known, hash matching, not revoked, not expired, its client still
    /// registered, and (for refresh tokens) not rotated away. Everything else is simply inactive.
    func activeToken(_ presented: String) async throws -> IntrospectedToken? {
        switch JWTAccessToken.classify(presented) {
        case nil: return nil
        case .selfContained(let token): return try await activeSelfContained(token)
        case .row(let locator): return try await activeRow(locator)
        }
    }

    private func activeRow(_ locator: TokenLocator) async throws -> IntrospectedToken? {
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

    /// A self-contained JWT is active when it verifies with this server's keys (signature, `typ`, `iss`, `exp`,
    /// `nbf`: `KeyManager.verifyOwnAccessToken`), is not an exchanged JWT (`act`), its `jti` is not on the
    /// revocation list, and its client is still registered under the incarnation its `jti` names. The signature is
    /// checked once per process (`SelfContainedTokenCache`); the revocation list is read at most every `ttl` s.
    private func activeSelfContained(_ token: JWTAccessToken.SelfContained) async throws -> IntrospectedToken? {
        let now = clock.now()
        var entry: SelfContainedTokenCache.Entry
        if let cached = jwts.get(token.jti, tokenHash: token.hash, now: now) {
            entry = cached
            if !jwts.isFresh(cached, now: now) {
                entry.revoked = try await store.isJWTRevoked(jti: token.jti)
                entry.checkedAt = now
                jwts.put(entry, now: now)
            }
        } else {
            guard let claims = try? await keys.verifyOwnAccessToken(token.token, issuer: issuer), claims.jti == token.jti, claims.act == nil,
                claims.sub == claims.client_id
            else { return nil }
            entry = .init(tokenHash: token.hash, claims: claims, revoked: try await store.isJWTRevoked(jti: token.jti), checkedAt: now)
            jwts.put(entry, now: now)
        }
        guard !entry.revoked, Self.isCurrent(entry.claims, now: now) else { return nil }
        guard let client = try await directory.client(id: entry.claims.client_id), client.incarnation == token.incarnation else { return nil }
        return Self.introspected(entry.claims, hash: token.hash, client: client)
    }

    /// Not expired by this server's clock (strictly: no skew past `exp`), and not before `nbf` beyond the skew
    /// replicas' clocks may have (the issuing replica's clock set it).
    static func isCurrent(_ claims: AccessTokenClaims, now: Int) -> Bool {
        claims.nbf <= now + KeyManager.replicaClockSkew && now < claims.exp
    }

    /// A self-contained JWT's claims in the shape introspection and exchange use for rows.
    static func introspected(_ claims: AccessTokenClaims, hash: String, client: ClientRecord) -> IntrospectedToken {
        let record = TokenRecord(
            id: 0, tokenHash: hash, kind: .access, clientID: claims.client_id, userID: nil, scope: claims.scope ?? "", issuedAt: claims.iat,
            expiresAt: claims.exp, familyID: nil, familyExpiresAt: nil, grantType: GrantType.clientCredentials.rawValue, authTime: nil
        )
        return IntrospectedToken(record: record, client: client, username: nil, selfContained: (claims.jti, claims.aud))
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

    /// `activeToken` from memory only: nil when the store must be asked (record, client or user not cached, a
    /// self-contained JWT not verified yet or its revocation status stale); `.some(nil)` when the token is known to
    /// be inactive.
    func activeTokenFromMemory(_ presented: String) -> IntrospectedToken?? {
        switch JWTAccessToken.classify(presented) {
        case nil: return .some(nil)
        case .selfContained(let token): return activeSelfContainedFromMemory(token)
        case .row(let locator): return activeRowFromMemory(locator)
        }
    }

    private func activeRowFromMemory(_ locator: TokenLocator) -> IntrospectedToken?? {
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

    private func activeSelfContainedFromMemory(_ token: JWTAccessToken.SelfContained) -> IntrospectedToken?? {
        let now = clock.now()
        guard let entry = jwts.get(token.jti, tokenHash: token.hash, now: now), jwts.isFresh(entry, now: now) else { return nil }
        guard !entry.revoked, Self.isCurrent(entry.claims, now: now) else { return .some(nil) }
        guard let cachedClient = directory.cachedClient(id: entry.claims.client_id) else { return nil }
        guard let client = cachedClient, client.incarnation == token.incarnation else { return .some(nil) }
        return .some(Self.introspected(entry.claims, hash: token.hash, client: client))
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
            iat: token.record.issuedAt, nbf: token.record.issuedAt, sub: token.subject, aud: token.selfContained?.audiences ?? audiences,
            iss: issuer, jti: token.selfContained?.jti ?? String(token.record.id)
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
