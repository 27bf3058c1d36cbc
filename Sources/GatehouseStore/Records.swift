import GatehouseTokens

/// A registered OAuth client as stored. Secrets are kept only as base64url(SHA-256(secret)).
public struct ClientRecord: Sendable, Equatable {
    public var id: String
    public var name: String
    /// `confidential` or `public`.
    public var type: String
    public var secretHash: String?
    public var grants: [String]
    public var scopes: [String]
    public var redirectURIs: [String]
    /// Clients registered from a configuration file are replaced on every start; others (CLI) are kept.
    public var fromConfiguration: Bool
    /// `aud` of JWTs issued for this client's tokens (empty: the server default).
    public var audiences: [String]
    /// May call the introspection endpoint.
    public var mayIntrospect: Bool
    /// The scope a request without `scope` gets; empty: such a request is refused (`invalid_scope`).
    public var defaultScopes: [String]
    /// `opaque` (default) or `jwt`: the access tokens the token endpoint issues to this client.
    public var accessTokenFormat: String
    /// Names this registration of the id: set when the client is first stored and kept by every later update, new
    /// when an id is removed and registered again. Self-contained JWTs carry it in their `jti`, so that a client
    /// removed and re-added does not bring its old tokens back. Not secret. Default: a new random value (the store
    /// keeps the stored one when the client exists already).
    public var incarnation: String

    public init(id: String, name: String, type: String, secretHash: String?, grants: [String], scopes: [String], redirectURIs: [String], fromConfiguration: Bool, audiences: [String] = [], mayIntrospect: Bool = false, defaultScopes: [String] = [], accessTokenFormat: String = "opaque", incarnation: String = ClientRecord.newIncarnation()) {
        self.id = id
        self.name = name
        self.type = type
        self.secretHash = secretHash
        self.grants = grants
        self.scopes = scopes
        self.redirectURIs = redirectURIs
        self.fromConfiguration = fromConfiguration
        self.audiences = audiences
        self.mayIntrospect = mayIntrospect
        self.defaultScopes = defaultScopes
        self.accessTokenFormat = accessTokenFormat
        self.incarnation = incarnation
    }

    /// A new incarnation: 16 random base64url characters (96 bits), no `.` (it is one field of a `jti`).
    public static func newIncarnation() -> String {
        String(SecureToken.generate().prefix(16))
    }

    public var isPublic: Bool { type == "public" }
    /// Whether the token endpoint issues this client RFC 9068 JWT access tokens.
    public var issuesJWTAccessTokens: Bool { accessTokenFormat == "jwt" }
}

/// A user as stored: the password only as a bcrypt hash.
public struct UserRecord: Sendable, Equatable {
    /// Stable subject identifier (never reused), used as `sub`.
    public var id: String
    public var username: String
    public var passwordHash: String

    /// A new, never reused subject id (`usr_` and 128 random bits).
    public static func newID() -> String {
        "usr_" + String(SecureToken.generate().prefix(22))
    }

    public init(id: String, username: String, passwordHash: String) {
        self.id = id
        self.username = username
        self.passwordHash = passwordHash
    }
}

/// An issued authorization code, keyed by its hash; single use.
public struct AuthorizationCodeRecord: Sendable, Equatable {
    public var codeHash: String
    public var clientID: String
    public var userID: String
    public var redirectURI: String
    /// Whether the authorization request named the redirect URI (then the token request must repeat it, RFC 6749 §4.1.3).
    public var redirectURIWasGiven: Bool
    public var scope: String
    public var codeChallenge: String?
    public var authTime: Int
    public var issuedAt: Int
    public var expiresAt: Int
    /// Every token issued from this code carries this family id, so that a replay can revoke them all.
    public var familyID: String
    public var usedAt: Int?

    public init(codeHash: String, clientID: String, userID: String, redirectURI: String, redirectURIWasGiven: Bool, scope: String, codeChallenge: String?, authTime: Int, issuedAt: Int, expiresAt: Int, familyID: String, usedAt: Int? = nil) {
        self.codeHash = codeHash
        self.clientID = clientID
        self.userID = userID
        self.redirectURI = redirectURI
        self.redirectURIWasGiven = redirectURIWasGiven
        self.scope = scope
        self.codeChallenge = codeChallenge
        self.authTime = authTime
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.familyID = familyID
        self.usedAt = usedAt
    }
}

/// What redeeming a code found.
public enum CodeRedemption: Sendable, Equatable {
    /// This call marked the code used: it may be exchanged once.
    case redeemed(AuthorizationCodeRecord)
    /// The code had been redeemed before: a replay.
    case alreadyUsed(AuthorizationCodeRecord)
    case notFound
}

/// Access or refresh token.
public enum TokenKind: String, Sendable {
    case access
    case refresh
}

/// An issued opaque token: row `id` (from the token itself, see `TokenLocator`) holding the token's hash.
public struct TokenRecord: Sendable, Equatable {
    public var id: Int64
    public var tokenHash: String
    public var kind: TokenKind
    public var clientID: String
    /// The user's id, or nil for client_credentials tokens.
    public var userID: String?
    public var scope: String
    public var issuedAt: Int
    public var expiresAt: Int
    /// Tokens descending from one grant (a code, a password login) share a family: reuse revokes it all.
    public var familyID: String?
    /// The family's absolute end (refresh tokens).
    public var familyExpiresAt: Int?
    /// The grant that produced the token (for introspection and audits).
    public var grantType: String
    public var authTime: Int?
    public var revoked: Bool
    /// When a refresh token was exchanged for a new one.
    public var rotatedAt: Int?

    public init(id: Int64, tokenHash: String, kind: TokenKind, clientID: String, userID: String?, scope: String, issuedAt: Int, expiresAt: Int, familyID: String?, familyExpiresAt: Int?, grantType: String, authTime: Int?, revoked: Bool = false, rotatedAt: Int? = nil) {
        self.id = id
        self.tokenHash = tokenHash
        self.kind = kind
        self.clientID = clientID
        self.userID = userID
        self.scope = scope
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.familyID = familyID
        self.familyExpiresAt = familyExpiresAt
        self.grantType = grantType
        self.authTime = authTime
        self.revoked = revoked
        self.rotatedAt = rotatedAt
    }
}

/// What marking a refresh token rotated found.
public enum RotationMark: Sendable, Equatable {
    /// This call rotated it (first use).
    case rotatedNow(TokenRecord)
    /// It had been rotated before, at the time given in the record's `rotatedAt`.
    case rotatedBefore(TokenRecord)
    /// Revoked already.
    case revoked(TokenRecord)
    case notFound
}

/// How many rows the token tables hold (tests, benchmarks, and the README's growth figures).
public struct StoredTokenCounts: Sendable, Equatable {
    /// Rows of `tokens`: every opaque token, refresh token and JWT with a user or a family.
    public var tokens: Int
    /// Rows of `jwt_revocations`: self-contained JWTs revoked before their expiry.
    public var jwtRevocations: Int

    public init(tokens: Int, jwtRevocations: Int) {
        self.tokens = tokens
        self.jwtRevocations = jwtRevocations
    }
}
