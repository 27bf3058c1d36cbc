import GatehouseStore
import PostgresNIO

/// Growth bounded: expired rows are deleted in short batches that any replica may run.
extension PostgresAuthStore {
    public func purgeExpired(now: Int) async throws -> Int {
        let limit = max(1, configuration.purgeBatchSize)
        // Codes stay ten minutes past their expiry (as in the SQLite store), so that a late replay is still
        // recognised as one. A refresh token stays while its family can live, so that reuse of an old member is
        // still detected.
        let codeCutoff = now - 600
        let statements: [PostgresQuery] = [
            """
            WITH gone AS (DELETE FROM authorization_codes WHERE ctid IN (
              SELECT ctid FROM authorization_codes WHERE expires_at < \(codeCutoff) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
            """
            WITH gone AS (DELETE FROM tokens WHERE ctid IN (
              SELECT ctid FROM tokens WHERE (kind = 'access' AND expires_at < \(now))
                OR (kind = 'refresh' AND expires_at < \(now) AND (family_expires_at IS NULL OR family_expires_at < \(now)))
              LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
            """
            WITH gone AS (DELETE FROM jwt_revocations WHERE ctid IN (
              SELECT ctid FROM jwt_revocations WHERE expires_at < \(now - jwtRevocationRetention) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
        ]
        return try await deleteInBatches("purgeExpired", statements, limit: limit)
    }

    /// Runs each `DELETE … LIMIT limit` statement (returning its count) until it deletes fewer than `limit` rows:
    /// many short transactions instead of one long one, so a large purge never holds locks for long.
    func deleteInBatches(_ operation: String, _ statements: [PostgresQuery], limit: Int) async throws -> Int {
        var removed = 0
        for statement in statements {
            while true {
                let counts = try await rows(operation, statement) { row in try row.decode(Int.self) }
                let batch = counts.first ?? 0
                removed += batch
                if batch < limit { break }
            }
        }
        return removed
    }
}
