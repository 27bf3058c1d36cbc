import GatehouseStore
import PostgresNIO

/// Revoked self-contained JWTs, by `jti` (they have no `tokens` row to mark).
extension PostgresAuthStore {
    public func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws {
        try await execute("revokeJWT", "INSERT INTO jwt_revocations(jti, client_id, expires_at) VALUES (\(jti), \(clientID), \(expiresAt)) ON CONFLICT(jti) DO NOTHING")
    }

    public func isJWTRevoked(jti: String) async throws -> Bool {
        !(try await rows("isJWTRevoked", "SELECT 1 FROM jwt_revocations WHERE jti = \(jti)") { _ in () }).isEmpty
    }

    public func tokenCounts() async throws -> StoredTokenCounts {
        let counts = try await rows("tokenCounts", "SELECT (SELECT count(*) FROM tokens), (SELECT count(*) FROM jwt_revocations)") { row in
            try row.decode((Int, Int).self)
        }
        return StoredTokenCounts(tokens: counts.first?.0 ?? 0, jwtRevocations: counts.first?.1 ?? 0)
    }
}
