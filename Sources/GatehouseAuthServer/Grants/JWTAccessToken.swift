import Foundation
import GatehouseStore
import GatehouseTokens

/// RFC 9068 JWT access tokens issued directly by the token endpoint to clients registered with
/// `access_token_format: jwt`. Each is recorded like an opaque token (row id, hash of the whole JWT), so that
/// introspection and revocation find it: its `jti` carries the row id, and the stored hash binds the record to
/// this exact JWT (the `jti` alone is no credential).
enum JWTAccessToken {
    /// A `jti` naming row `id`: `<id>.<22 random base64url characters>`.
    static func jti(rowID: Int64) -> String {
        "\(rowID)." + SecureToken.generate().prefix(22)
    }

    /// The locator of a presented token: an opaque split token, or a JWT whose `jti` names a row (nil otherwise).
    /// The JWT is not verified here: the lookup succeeds only if its hash matches the stored one, and only this
    /// server stored it.
    static func locator(presented: String) -> TokenLocator? {
        if let opaque = TokenLocator(token: presented) { return opaque }
        let parts = presented.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, presented.utf8.count <= 8192, let payload = Base64URL.decode(parts[1]),
            let claims = try? JSONDecoder().decode(JTI.self, from: Data(payload)), let jti = claims.jti,
            let dot = jti.firstIndex(of: "."), let id = Int64(jti[..<dot]), id > 0
        else { return nil }
        return TokenLocator(id: id, hash: SecureToken.hash(presented))
    }

    private struct JTI: Decodable {
        var jti: String?
    }
}
