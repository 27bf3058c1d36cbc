import GatehouseStore
import PostgresNIO

/// The login throttle's counters in the shared database (`login_throttle`, migration 3), keyed by the SHA-256 of
/// the throttle key. Each update is one transaction that locks the keys' rows, lets the authorization server's
/// pure state machine decide on them, and writes its result: failures on every replica count together.
extension PostgresAuthStore: LoginThrottleStore {
    public func updateLoginThrottle<T: Sendable>(
        keyHashes: [String], _ transition: @escaping @Sendable ([String: LoginThrottleRecord]) -> (answer: T, entries: [String: LoginThrottleRecord])
    ) async throws -> T {
        // Sorted, so that two transactions locking the same two keys (one address, two usernames) take them in
        // the same order and cannot deadlock.
        let keys = Array(Set(keyHashes)).sorted()
        return try await transaction("updateLoginThrottle") { connection, logger in
            // Sign-in attempts for one username queue on its row lock, each holding a pooled connection; the form
            // needs no credential, so a burst of guesses at one name must not hold the pool that serves /token.
            // Past `loginThrottleLockTimeout` the attempt fails as unavailable (503 with Retry-After), never waits on.
            try await connection.query("SET LOCAL lock_timeout = '\(unescaped: Self.loginThrottleLockTimeout)'", logger: logger)
            // A missing row cannot be locked, and two replicas inserting the same new key would both see it absent:
            // insert empty rows first (a second inserter waits for the first's commit, then finds the row), then lock
            // them all. An empty row (no failure, nothing pending) means the same to the state machine as none.
            try await connection.query("""
                INSERT INTO login_throttle(key_hash, failures, last_failure, pending, last_reserved)
                SELECT key, 0, 0, 0, 0 FROM unnest(\(keys)::TEXT[]) AS key ORDER BY key
                ON CONFLICT (key_hash) DO NOTHING
                """, logger: logger)
            var current: [String: LoginThrottleRecord] = [:]
            let rows = try await connection.query("""
                SELECT key_hash, failures, last_failure, pending, last_reserved FROM login_throttle
                WHERE key_hash = ANY(\(keys)::TEXT[]) ORDER BY key_hash FOR UPDATE
                """, logger: logger)
            for try await (key, failures, lastFailure, pending, lastReserved) in rows.decode((String, Int, Int, Int, Int).self) where failures > 0 || pending > 0 {
                current[key] = LoginThrottleRecord(failures: failures, lastFailure: lastFailure, pending: pending, lastReserved: lastReserved)
            }
            let (answer, entries) = transition(current)
            var gone: [String] = []
            for key in keys where entries[key] != current[key] || entries[key] == nil {
                // Unchanged (an attempt refused while throttled): nothing to write. Otherwise an upsert, not an
                // UPDATE: an idle row the purge deleted between our INSERT and our lock would match no row and the
                // attempt would go uncounted.
                guard let entry = entries[key] else {
                    gone.append(key)
                    continue
                }
                try await connection.query("""
                    INSERT INTO login_throttle(key_hash, failures, last_failure, pending, last_reserved)
                    VALUES (\(key), \(entry.failures), \(entry.lastFailure), \(entry.pending), \(entry.lastReserved))
                    ON CONFLICT (key_hash) DO UPDATE SET failures = EXCLUDED.failures, last_failure = EXCLUDED.last_failure,
                      pending = EXCLUDED.pending, last_reserved = EXCLUDED.last_reserved
                    """, logger: logger)
            }
            if !gone.isEmpty {
                try await connection.query("DELETE FROM login_throttle WHERE key_hash = ANY(\(gone)::TEXT[])", logger: logger)
            }
            return answer
        }
    }

    /// How long a sign-in attempt waits for another attempt's lock on the same throttle key before it is answered
    /// 503 (`lock_timeout`, SQLSTATE 55P03, is transient here). One throttle step takes a few milliseconds, so this
    /// is dozens of queued attempts at one key.
    static let loginThrottleLockTimeout = "250ms"

    public func purgeLoginThrottle(idleBefore cutoff: Int) async throws -> Int {
        let limit = max(1, configuration.purgeBatchSize)
        // A row whose last failure and last reservation are both a window old counts nothing any more. A row a
        // sign-in holds locked is skipped by the DELETE's re-check (its new version has another ctid).
        let statement: PostgresQuery = """
            WITH gone AS (DELETE FROM login_throttle WHERE ctid IN (
              SELECT ctid FROM login_throttle WHERE GREATEST(last_failure, last_reserved) < \(cutoff) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """
        return try await deleteInBatches("purgeLoginThrottle", [statement], limit: limit)
    }
}
