import GatehouseStore
import PostgresNIO

/// Browser sessions and pending authorization requests in the shared database: a browser that lands on another
/// replica finds its session, CSRF token and pending request there. Each call is one statement (a sign-in's
/// replacement one transaction), so the cost per page is one round trip.
extension PostgresAuthStore: LoginStateStore {
    public func insertSession(_ session: BrowserSessionRecord) async throws {
        try await execute("insertSession", """
            INSERT INTO browser_sessions(id_hash, csrf_token, user_id, username, auth_time, signed_in, expires_at)
            VALUES (\(session.idHash), \(session.csrfToken), \(session.userID), \(session.username), \(session.authTime), \(session.isSignedIn), \(session.expiresAt))
            """)
    }

    public func session(idHash: String, now: Int) async throws -> BrowserSessionRecord? {
        try await rows("session", """
            SELECT id_hash, csrf_token, user_id, username, auth_time, expires_at FROM browser_sessions
            WHERE id_hash = \(idHash) AND expires_at > \(now)
            """) { row in
            let (idHash, csrf, userID, username, authTime, expiresAt) = try row.decode((String, String, String?, String?, Int?, Int).self)
            return BrowserSessionRecord(idHash: idHash, csrfToken: csrf, userID: userID, username: username, authTime: authTime, expiresAt: expiresAt)
        }.first
    }

    public func replaceSession(_ oldIDHash: String, with session: BrowserSessionRecord) async throws {
        try await transaction("replaceSession") { connection, logger in
            try await connection.query("DELETE FROM browser_sessions WHERE id_hash = \(oldIDHash)", logger: logger)
            try await connection.query("""
                INSERT INTO browser_sessions(id_hash, csrf_token, user_id, username, auth_time, signed_in, expires_at)
                VALUES (\(session.idHash), \(session.csrfToken), \(session.userID), \(session.username), \(session.authTime), \(session.isSignedIn), \(session.expiresAt))
                """, logger: logger)
        }
    }

    public func deleteSession(idHash: String) async throws -> Bool {
        let deleted = try await rows("deleteSession", "DELETE FROM browser_sessions WHERE id_hash = \(idHash) RETURNING 1") { _ in () }
        return !deleted.isEmpty
    }

    public func insertPendingAuthorization(_ request: PendingAuthorizationRecord) async throws {
        try await execute("insertPendingAuthorization", """
            INSERT INTO pending_authorizations(id_hash, session_hash, signed_in, expires_at, payload)
            VALUES (\(request.idHash), \(request.sessionHash), \(request.signedIn), \(request.expiresAt), \(request.payload))
            """)
    }

    public func pendingAuthorization(idHash: String, now: Int) async throws -> PendingAuthorizationRecord? {
        try await rows("pendingAuthorization", """
            SELECT id_hash, session_hash, signed_in, expires_at, payload FROM pending_authorizations
            WHERE id_hash = \(idHash) AND expires_at > \(now)
            """) { row in
            let (idHash, sessionHash, signedIn, expiresAt, payload) = try row.decode((String, String, Bool, Int, String).self)
            return PendingAuthorizationRecord(idHash: idHash, sessionHash: sessionHash, signedIn: signedIn, expiresAt: expiresAt, payload: payload)
        }.first
    }

    public func rebindPendingAuthorization(idHash: String, toSessionHash sessionHash: String) async throws {
        try await execute("rebindPendingAuthorization", "UPDATE pending_authorizations SET session_hash = \(sessionHash), signed_in = TRUE WHERE id_hash = \(idHash)")
    }

    public func takePendingAuthorization(idHash: String) async throws -> Bool {
        // The DELETE's row lock decides: a second replica's DELETE waits, then finds the row gone.
        let taken = try await rows("takePendingAuthorization", "DELETE FROM pending_authorizations WHERE id_hash = \(idHash) RETURNING 1") { _ in () }
        return !taken.isEmpty
    }

    public func purgeLoginState(now: Int, maxAnonymousSessions: Int, maxSignedInSessions: Int) async throws -> Int {
        let limit = max(1, configuration.purgeBatchSize)
        // Each statement deletes at most `limit` rows (a short transaction, row locks on those rows only) and is
        // repeated while it fills its batch. The trims keep the newest `max…` rows of a tier (by expiry: the
        // most recently made) and delete the rest from the oldest end.
        let statements: [PostgresQuery] = [
            """
            WITH gone AS (DELETE FROM browser_sessions WHERE ctid IN (
              SELECT ctid FROM browser_sessions WHERE expires_at <= \(now) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
            """
            WITH gone AS (DELETE FROM pending_authorizations WHERE ctid IN (
              SELECT ctid FROM pending_authorizations WHERE expires_at <= \(now) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
            """
            WITH gone AS (DELETE FROM browser_sessions WHERE ctid IN (
              SELECT ctid FROM browser_sessions WHERE NOT signed_in ORDER BY expires_at DESC OFFSET \(max(0, maxAnonymousSessions)) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
            """
            WITH gone AS (DELETE FROM browser_sessions WHERE ctid IN (
              SELECT ctid FROM browser_sessions WHERE signed_in ORDER BY expires_at DESC OFFSET \(max(0, maxSignedInSessions)) LIMIT \(limit)) RETURNING 1)
            SELECT count(*) FROM gone
            """,
        ]
        return try await deleteInBatches("purgeLoginState", statements, limit: limit)
    }
}
