import SQLiteNIO

/// The schema, as numbered migrations applied once each, in order, each in its own transaction.
enum SchemaMigrations {
    static let migrations: [[String]] = [
        // 1: clients, users, codes, tokens, consents.
        [
            """
            CREATE TABLE clients(id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, secret_hash TEXT,
              grants TEXT NOT NULL, scopes TEXT NOT NULL, redirect_uris TEXT NOT NULL,
              from_configuration INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)
            """,
            "CREATE TABLE users(id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL)",
            """
            CREATE TABLE authorization_codes(code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT NOT NULL,
              redirect_uri TEXT NOT NULL, redirect_uri_given INTEGER NOT NULL, scope TEXT NOT NULL, code_challenge TEXT,
              auth_time INTEGER NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, family_id TEXT NOT NULL,
              used_at INTEGER)
            """,
            """
            CREATE TABLE tokens(id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL, kind TEXT NOT NULL, client_id TEXT NOT NULL, subject TEXT,
              scope TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, family_id TEXT,
              family_expires_at INTEGER, grant_type TEXT NOT NULL, auth_time INTEGER, revoked INTEGER NOT NULL DEFAULT 0,
              rotated_at INTEGER)
            """,
            "CREATE INDEX tokens_family ON tokens(family_id) WHERE family_id IS NOT NULL",
            "CREATE INDEX tokens_expiry ON tokens(expires_at)",
            "CREATE INDEX tokens_client ON tokens(client_id)",
            "CREATE INDEX tokens_subject ON tokens(subject) WHERE subject IS NOT NULL",
            "CREATE INDEX codes_expiry ON authorization_codes(expires_at)",
            """
            CREATE TABLE consents(user_id TEXT NOT NULL, client_id TEXT NOT NULL, scopes TEXT NOT NULL,
              granted_at INTEGER NOT NULL, PRIMARY KEY(user_id, client_id))
            """,
        ],
        // 2: JWT audiences and the introspection permission per client.
        [
            "ALTER TABLE clients ADD COLUMN audiences TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE clients ADD COLUMN may_introspect INTEGER NOT NULL DEFAULT 0",
        ],
        // 3: replays of a code recorded (so that tokens stored after the replay are revoked too), the scope a
        // request without `scope` gets, and the access-token format per client.
        [
            "ALTER TABLE authorization_codes ADD COLUMN replayed_at INTEGER",
            "ALTER TABLE clients ADD COLUMN default_scopes TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE clients ADD COLUMN access_token_format TEXT NOT NULL DEFAULT 'opaque'",
        ],
        // 4: self-contained client_credentials JWTs have no `tokens` row. A client's incarnation (new when an id is
        // registered again) is in their `jti`; the revoked ones are listed by `jti` until they expire.
        [
            "ALTER TABLE clients ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''",
            "UPDATE clients SET incarnation = lower(hex(randomblob(8)))",
            "CREATE TABLE jwt_revocations(jti TEXT PRIMARY KEY, client_id TEXT NOT NULL, expires_at INTEGER NOT NULL)",
            "CREATE INDEX jwt_revocations_expiry ON jwt_revocations(expires_at)",
        ],
    ]

    static func migrate(_ connection: SQLiteConnection) async throws {
        _ = try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        let applied = try await connection.query("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations")
        let current = Int(applied.first?.column("version")?.integer ?? 0)
        guard current <= migrations.count else {
            throw StoreError(code: .migrationFailed, message: "database schema version \(current) is newer than this build knows (\(migrations.count))")
        }
        for (index, statements) in migrations.enumerated() where index + 1 > current {
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                for statement in statements { _ = try await connection.query(statement) }
                _ = try await connection.query("INSERT INTO schema_migrations(version, applied_at) VALUES (?, strftime('%s','now'))", [.integer(index + 1)])
                _ = try await connection.query("COMMIT")
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw StoreError(code: .migrationFailed, message: "migration \(index + 1): \(error)")
            }
        }
    }
}
