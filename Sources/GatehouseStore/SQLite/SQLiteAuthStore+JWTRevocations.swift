import SQLiteNIO

/// Revoked self-contained JWTs, by `jti` (they have no `tokens` row to mark).
extension SQLiteAuthStore {
    public func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws {
        try await run(writer, "INSERT INTO jwt_revocations(jti, client_id, expires_at) VALUES (?, ?, ?) ON CONFLICT(jti) DO NOTHING", [
            .text(jti), .text(clientID), .integer(expiresAt),
        ])
    }

    public func isJWTRevoked(jti: String) async throws -> Bool {
        !(try await run(reader, "SELECT 1 FROM jwt_revocations WHERE jti = ?", [.text(jti)])).isEmpty
    }

    public func tokenCounts() async throws -> StoredTokenCounts {
        let row = try await run(reader, "SELECT (SELECT count(*) FROM tokens) AS tokens, (SELECT count(*) FROM jwt_revocations) AS revocations", []).first
        return StoredTokenCounts(tokens: row?.column("tokens")?.integer ?? 0, jwtRevocations: row?.column("revocations")?.integer ?? 0)
    }
}
