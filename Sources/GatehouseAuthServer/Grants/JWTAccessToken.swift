import Foundation
import GatehouseStore
import GatehouseTokens

/// RFC 9068 JWT access tokens issued directly by the token endpoint to clients registered with
/// `access_token_format: jwt`. Two kinds, told apart by their `jti`:
///
/// - **Row-backed** (`<row id>.<random>`): a token with a user or a refresh family (authorization code, password,
///   refresh grants). It is recorded like an opaque token (row id, hash of the whole JWT), because a family's
///   revocation must reach it and introspection must name its user: its `jti` carries the row id, and the stored
///   hash binds the record to this exact JWT (the `jti` alone is no credential).
/// - **Self-contained** (`sc.<client incarnation>.<random>`): a client_credentials token. Nothing is stored when it
///   is issued: the signed JWT is its own record, and introspection verifies it with the server's own keys (see
///   `TokenIntrospector`). Revoking one stores its `jti` until it expires (`AuthStore.revokeJWT`); the client's
///   incarnation makes it die with its client's registration, even if the id is registered again.
enum JWTAccessToken {
    /// A `jti` naming row `id`: `<id>.<22 random base64url characters>`.
    static func jti(rowID: Int64) -> String {
        "\(rowID)." + SecureToken.generate().prefix(22)
    }

    /// The prefix of self-contained `jti`s (never a row id: those are decimal digits).
    static let selfContainedPrefix = "sc."

    /// A self-contained `jti`: `sc.<incarnation>.<22 random base64url characters>` (132 random bits).
    static func selfContainedJTI(incarnation: String) -> String {
        selfContainedPrefix + incarnation + "." + SecureToken.generate().prefix(22)
    }

    /// A presented self-contained JWT, parsed but not verified.
    struct SelfContained: Sendable {
        var token: String
        var jti: String
        /// The client incarnation its `jti` names.
        var incarnation: Substring
        /// SHA-256 of the whole JWT (the cache of verified tokens is keyed by `jti` and checked against it).
        var hash: String
    }

    /// What a presented token names.
    enum Presented: Sendable {
        /// An opaque token or a row-backed JWT.
        case row(TokenLocator)
        case selfContained(SelfContained)
    }

    /// Classifies a presented token by its form (nil: neither kind; the JWT is not verified here). A row lookup
    /// succeeds only if the JWT's hash matches the stored one, and only this server stored it; a self-contained
    /// JWT is verified by whoever accepts it.
    static func classify(_ presented: String) -> Presented? {
        if let opaque = TokenLocator(token: presented) { return .row(opaque) }
        let parts = presented.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, presented.utf8.count <= 8192, let payload = Base64URL.decode(parts[1]),
            let claims = try? JSONDecoder().decode(JTI.self, from: Data(payload)), let jti = claims.jti
        else { return nil }
        if jti.hasPrefix(selfContainedPrefix) {
            let fields = jti.split(separator: ".", omittingEmptySubsequences: false)
            guard fields.count == 3, !fields[1].isEmpty, !fields[2].isEmpty else { return nil }
            return .selfContained(SelfContained(token: presented, jti: jti, incarnation: fields[1], hash: SecureToken.hash(presented)))
        }
        guard let dot = jti.firstIndex(of: "."), let id = Int64(jti[..<dot]), id > 0 else { return nil }
        return .row(TokenLocator(id: id, hash: SecureToken.hash(presented)))
    }

    private struct JTI: Decodable {
        var jti: String?
    }
}
