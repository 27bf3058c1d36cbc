import GatehouseStore
import Logging
import PostgresNIO

/// The PostgreSQL schema, as numbered migrations. All pending ones run in one transaction that first takes a
/// transaction-scoped advisory lock, so two servers starting at once against an empty database migrate it once:
/// the second waits for the first's commit, then finds every version applied (DDL is transactional in PostgreSQL).
enum PostgresSchema {
    /// The advisory lock key: "gatehous" in ASCII, so that it does not collide with another application's small
    /// integers on a shared database.
    static let lockKey: Int64 = 0x6761_7465_686F_7573

    /// Token ids come from this sequence in blocks (see `TokenIDBlocks`); the block size is part of the schema so
    /// that every replica agrees on it.
    static let tokenIDBlockSize: Int64 = 1024

    static let migrations: [[String]] = [
        // 1: clients, users, codes, tokens, consents; the token id sequence. Same columns as the SQLite schema
        // after its migration 3, with booleans as booleans.
        [
            """
            CREATE TABLE clients(id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, secret_hash TEXT,
              grants TEXT NOT NULL, scopes TEXT NOT NULL, redirect_uris TEXT NOT NULL,
              from_configuration BOOLEAN NOT NULL DEFAULT FALSE, audiences TEXT NOT NULL DEFAULT '',
              may_introspect BOOLEAN NOT NULL DEFAULT FALSE, default_scopes TEXT NOT NULL DEFAULT '',
              access_token_format TEXT NOT NULL DEFAULT 'opaque', created_at BIGINT NOT NULL)
            """,
            "CREATE TABLE users(id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_at BIGINT NOT NULL)",
            """
            CREATE TABLE authorization_codes(code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT NOT NULL,
              redirect_uri TEXT NOT NULL, redirect_uri_given BOOLEAN NOT NULL, scope TEXT NOT NULL, code_challenge TEXT,
              auth_time BIGINT NOT NULL, issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, family_id TEXT NOT NULL,
              used_at BIGINT, replayed_at BIGINT)
            """,
            """
            CREATE TABLE tokens(id BIGINT PRIMARY KEY, token_hash TEXT NOT NULL, kind TEXT NOT NULL, client_id TEXT NOT NULL,
              subject TEXT, scope TEXT NOT NULL, issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, family_id TEXT,
              family_expires_at BIGINT, grant_type TEXT NOT NULL, auth_time BIGINT, revoked BOOLEAN NOT NULL DEFAULT FALSE,
              rotated_at BIGINT)
            """,
            "CREATE INDEX tokens_family ON tokens(family_id) WHERE family_id IS NOT NULL",
            "CREATE INDEX tokens_expiry ON tokens(expires_at)",
            "CREATE INDEX tokens_client ON tokens(client_id)",
            "CREATE INDEX tokens_subject ON tokens(subject) WHERE subject IS NOT NULL",
            "CREATE INDEX codes_expiry ON authorization_codes(expires_at)",
            """
            CREATE TABLE consents(user_id TEXT NOT NULL, client_id TEXT NOT NULL, scopes TEXT NOT NULL,
              granted_at BIGINT NOT NULL, PRIMARY KEY(user_id, client_id))
            """,
            "CREATE SEQUENCE token_ids START WITH 1 INCREMENT BY \(tokenIDBlockSize)",
        ],
        // 2: browser sign-in state shared by the replicas (`LoginStateStore`): sessions under the hash of the
        // cookie's id, pending authorization requests under the hash of theirs. The (signed_in, expires_at)
        // indexes serve both the purge of expired rows and the trim of the oldest beyond the caps.
        [
            """
            CREATE TABLE browser_sessions(id_hash TEXT PRIMARY KEY, csrf_token TEXT NOT NULL, user_id TEXT, username TEXT,
              auth_time BIGINT, signed_in BOOLEAN NOT NULL, expires_at BIGINT NOT NULL)
            """,
            "CREATE INDEX browser_sessions_expiry ON browser_sessions(signed_in, expires_at)",
            """
            CREATE TABLE pending_authorizations(id_hash TEXT PRIMARY KEY, session_hash TEXT NOT NULL, signed_in BOOLEAN NOT NULL,
              expires_at BIGINT NOT NULL, payload TEXT NOT NULL)
            """,
            "CREATE INDEX pending_authorizations_expiry ON pending_authorizations(expires_at)",
        ],
        // 3: the login throttle's counters shared by the replicas (`LoginThrottleStore`), under the SHA-256 of the
        // throttle key (never a username or an address). The expression index serves the purge of idle rows.
        [
            """
            CREATE TABLE login_throttle(key_hash TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure BIGINT NOT NULL,
              pending INTEGER NOT NULL, last_reserved BIGINT NOT NULL)
            """,
            "CREATE INDEX login_throttle_idle ON login_throttle((GREATEST(last_failure, last_reserved)))",
        ],
        // 4: self-contained client_credentials JWTs have no `tokens` row. A client's incarnation (new when an id is
        // registered again) is in their `jti`; the revoked ones are listed by `jti` until they expire. (SQLite's
        // migration 4.)
        [
            "ALTER TABLE clients ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''",
            "UPDATE clients SET incarnation = substr(md5(random()::text || id), 1, 16)",
            "CREATE TABLE jwt_revocations(jti TEXT PRIMARY KEY, client_id TEXT NOT NULL, expires_at BIGINT NOT NULL)",
            "CREATE INDEX jwt_revocations_expiry ON jwt_revocations(expires_at)",
        ],
    ]

    /// Applies the pending migrations; returns how many ran (0 when the database was current).
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            // The lock wait (another server migrating) and long DDL are not bounded by the per-request
            // statement_timeout; a minute is plenty for this schema.
            try await connection.query("SET LOCAL statement_timeout = '60s'", logger: logger)
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)", logger: logger)
            let rows = try await connection.query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", logger: logger)
            var current = 0
            for try await (version) in rows.decode(Int.self) { current = version }
            guard current <= migrations.count else {
                throw StoreError(code: .migrationFailed, message: "database schema version \(current) is newer than this build knows (\(migrations.count))")
            }
            var applied = 0
            for (index, statements) in migrations.enumerated() where index + 1 > current {
                for statement in statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let version = index + 1
                try await connection.query("INSERT INTO schema_migrations(version, applied_at) VALUES (\(version), EXTRACT(EPOCH FROM now())::BIGINT)", logger: logger)
                applied += 1
            }
            return applied
        }
    }
}
