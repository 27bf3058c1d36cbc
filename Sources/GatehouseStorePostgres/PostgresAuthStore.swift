import GatehouseStore
import GatehouseTokens
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// The store for replicated authorization servers: PostgreSQL through postgres-nio's pool. Several servers
/// share one database; everything that must happen once happens in one statement whose `WHERE` clause is the
/// condition (`UPDATE … WHERE used_at IS NULL RETURNING …`): under READ COMMITTED a second writer of the same
/// row waits for the first to commit, re-checks the condition on the new row version and matches nothing, so of
/// two replicas racing exactly one wins. Every write is a committed statement or transaction before the call
/// returns (`synchronous_commit` is the server's: `on` by default, so acknowledged means durable).
public final class PostgresAuthStore: AuthStore {
    let client: PostgresClient
    let logger: Logger
    let configuration: Configuration
    /// The pool runs as long as the store is open; `close()` cancels it and waits for its connections to close.
    private let runner: Task<Void, Never>
    private let ids: TokenIDBlocks
    /// Token inserts from concurrent requests go to the database together, one multi-row INSERT per batch with
    /// one write in flight (as in the SQLite store): measured here, a statement per token cost about 120 µs of
    /// this process's CPU per issued token beyond SQLite's, most of it per-statement work in the driver.
    private let tokenBatcher: GroupCommitBatcher<TokenRecord>
    private let batchLoop: any EventLoop

    private init(configuration: Configuration, logger: Logger) {
        var options = PostgresClient.Configuration.Options()
        options.maximumConnections = max(1, configuration.poolSize)
        options.connectTimeout = .milliseconds(configuration.connectTimeoutMilliseconds)
        options.additionalStartupParameters = [
            ("statement_timeout", String(configuration.statementTimeoutMilliseconds)),
            // A transaction left open by a crashed request must not hold row locks for long.
            ("idle_in_transaction_session_timeout", String(max(10_000, configuration.statementTimeoutMilliseconds * 5))),
            ("application_name", "gatehouse"),
        ]
        var clientConfiguration = PostgresClient.Configuration(
            host: configuration.host, port: configuration.port, username: configuration.username, password: configuration.password,
            database: configuration.database, tls: configuration.tls.map { .require($0) } ?? .disable
        )
        clientConfiguration.options = options
        let client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        self.configuration = configuration
        self.runner = Task { await client.run() }
        let batchLoop = MultiThreadedEventLoopGroup.singleton.any()
        self.batchLoop = batchLoop
        let deadline = configuration.callDeadline
        self.tokenBatcher = GroupCommitBatcher(maxBatchSize: 512) { [client, logger] batch in
            let promise = batchLoop.makePromise(of: Void.self)
            promise.completeWithTask {
                try await PostgresAuthStore.insertTokenRows(batch, client: client, logger: logger, deadline: deadline)
            }
            return promise.futureResult
        }
        self.ids = TokenIDBlocks { [client] in
            var first: Int64?
            for try await value in try await client.query("SELECT nextval('token_ids')", logger: logger).decode(Int64.self) { first = value }
            guard let first else { throw StoreError(code: .corruptRow, message: "nextval returned no row") }
            return first
        }
    }

    /// Connects and applies pending migrations (unless `migrate` is false: then the schema must be current).
    /// Fails with `.unavailable` when the server cannot be reached within the connect and statement timeouts.
    public static func open(_ configuration: Configuration, logger: Logger, migrate: Bool = true) async throws -> PostgresAuthStore {
        let store = PostgresAuthStore(configuration: configuration, logger: logger)
        do {
            // A ping first, under the ordinary call deadline: a wrong password or an absent server is reported in
            // seconds, not after the migration's long lock wait.
            try await store.ping()
            if migrate { _ = try await store.migrate() }
        } catch let error as StoreError where error.code == .unavailable {
            try? await store.close()
            // The pool retries a refused login or a missing database like a server that is down, so all the
            // call saw was its deadline: one direct connection tells which (wrong password, no such database,
            // nothing listening).
            throw await diagnose(configuration, logger: logger).map { StoreError(code: .openFailed, message: $0) } ?? error
        } catch {
            try? await store.close()
            throw error
        }
        return store
    }

    /// Why a single connection with this configuration fails (SQLSTATE and the server's message, never the
    /// password), or nil when it succeeds.
    static func diagnose(_ configuration: Configuration, logger: Logger) async -> String? {
        do {
            var tls = PostgresConnection.Configuration.TLS.disable
            if let settings = configuration.tls { tls = .require(try NIOSSLContext(configuration: settings)) }
            var connection = PostgresConnection.Configuration(
                host: configuration.host, port: configuration.port, username: configuration.username, password: configuration.password,
                database: configuration.database, tls: tls
            )
            connection.options.connectTimeout = .milliseconds(Int64(configuration.connectTimeoutMilliseconds))
            let opened = try await PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.any(), configuration: connection, id: 0, logger: logger).get()
            try? await opened.close()
            return nil
        } catch {
            return "cannot connect to \(configuration.host):\(configuration.port)/\(configuration.database) as \(configuration.username): " + PostgresErrors.storeError(error, doing: "connect").message
        }
    }

    /// Applies pending migrations; returns how many ran. Safe to run from several servers at once.
    @discardableResult
    public func migrate() async throws -> Int {
        // The lock wait is bounded by the migration's own statement timeout (60 s), not the per-call deadline.
        do {
            return try await Deadline.run(.seconds(60) + configuration.callDeadline, operation: "migrate") { [client, logger] in
                try await PostgresSchema.migrate(client, logger: logger)
            }
        } catch {
            let mapped = PostgresErrors.storeError(error, doing: "migrate")
            throw mapped.code == .unavailable ? mapped : StoreError(code: .migrationFailed, message: mapped.message)
        }
    }

    /// The schema version the database is at (the highest applied migration; 0 before any).
    public func schemaVersion() async throws -> Int {
        let versions = try await rows("schemaVersion", "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations") { row in try row.decode(Int.self) }
        return versions.first ?? 0
    }

    /// Closes the pool's connections. Waits at most 5 s for them (a server that stopped answering cannot hold
    /// up a shutdown); the pool finishes closing in the background after that.
    public func close() async throws {
        runner.cancel()
        let runner = self.runner
        let closed = (try? await Deadline.run(.seconds(5), operation: "close") { await runner.value }) != nil
        if !closed { logger.warning("PostgreSQL pool still closing after 5 s; not waiting for it") }
    }

    public func ping() async throws {
        try await execute("ping", "SELECT 1")
    }

    // MARK: Clients

    public func upsertClient(_ client: ClientRecord) async throws {
        let grants = client.grants.joined(separator: " "), scopes = client.scopes.joined(separator: " ")
        let redirects = client.redirectURIs.joined(separator: " "), audiences = client.audiences.joined(separator: " ")
        let defaults = client.defaultScopes.joined(separator: " ")
        try await execute("upsertClient", """
            INSERT INTO clients(id, name, type, secret_hash, grants, scopes, redirect_uris, from_configuration, audiences, may_introspect,
              default_scopes, access_token_format, incarnation, created_at)
            VALUES (\(client.id), \(client.name), \(client.type), \(client.secretHash), \(grants), \(scopes), \(redirects),
              \(client.fromConfiguration), \(audiences), \(client.mayIntrospect), \(defaults), \(client.accessTokenFormat),
              \(client.incarnation), EXTRACT(EPOCH FROM now())::BIGINT)
            ON CONFLICT(id) DO UPDATE SET name=excluded.name, type=excluded.type, secret_hash=excluded.secret_hash,
              grants=excluded.grants, scopes=excluded.scopes, redirect_uris=excluded.redirect_uris,
              from_configuration=excluded.from_configuration, audiences=excluded.audiences, may_introspect=excluded.may_introspect,
              default_scopes=excluded.default_scopes, access_token_format=excluded.access_token_format
            """)
    }

    public func client(id: String) async throws -> ClientRecord? {
        try await rows("client", "SELECT * FROM clients WHERE id = \(id)", Self.clientRecord).first
    }

    public func listClients() async throws -> [ClientRecord] {
        try await rows("listClients", "SELECT * FROM clients ORDER BY id", Self.clientRecord)
    }

    public func removeClient(id: String) async throws -> Bool {
        try await transaction("removeClient") { connection, logger in
            let removed = try await connection.query("DELETE FROM clients WHERE id = \(id) RETURNING id", logger: logger).collect()
            try await connection.query("UPDATE tokens SET revoked = TRUE WHERE client_id = \(id) AND NOT revoked", logger: logger)
            try await connection.query("DELETE FROM authorization_codes WHERE client_id = \(id)", logger: logger)
            return !removed.isEmpty
        }
    }

    public func removeConfigurationClients(notIn ids: Set<String>) async throws {
        let configured = try await rows("removeConfigurationClients", "SELECT id FROM clients WHERE from_configuration") { row in
            try row.makeRandomAccess()["id"].decode(String.self)
        }
        for id in configured where !ids.contains(id) {
            try await removeClient(id: id)
        }
    }

    static func clientRecord(_ row: PostgresRow) throws -> ClientRecord {
        let row = row.makeRandomAccess()
        func list(_ name: String) throws -> [String] {
            try row[name].decode(String.self).split(separator: " ").map(String.init)
        }
        return ClientRecord(
            id: try row["id"].decode(String.self),
            name: try row["name"].decode(String.self),
            type: try row["type"].decode(String.self),
            secretHash: try row["secret_hash"].decode(String?.self),
            grants: try list("grants"),
            scopes: try list("scopes"),
            redirectURIs: try list("redirect_uris"),
            fromConfiguration: try row["from_configuration"].decode(Bool.self),
            audiences: try list("audiences"),
            mayIntrospect: try row["may_introspect"].decode(Bool.self),
            defaultScopes: try list("default_scopes"),
            accessTokenFormat: try row["access_token_format"].decode(String.self),
            incarnation: try row["incarnation"].decode(String.self)
        )
    }

    // MARK: Users

    public func upsertUser(_ user: UserRecord) async throws {
        try await execute("upsertUser", """
            INSERT INTO users(id, username, password_hash, created_at) VALUES (\(user.id), \(user.username), \(user.passwordHash), EXTRACT(EPOCH FROM now())::BIGINT)
            ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash
            """)
    }

    public func user(username: String) async throws -> UserRecord? {
        try await rows("user", "SELECT id, username, password_hash FROM users WHERE username = \(username)", Self.userRecord).first
    }

    public func user(id: String) async throws -> UserRecord? {
        try await rows("user", "SELECT id, username, password_hash FROM users WHERE id = \(id)", Self.userRecord).first
    }

    public func removeUser(username: String) async throws -> Bool {
        try await transaction("removeUser") { connection, logger in
            var removed: String?
            for try await id in try await connection.query("DELETE FROM users WHERE username = \(username) RETURNING id", logger: logger).decode(String.self) {
                removed = id
            }
            guard let id = removed else { return false }
            try await connection.query("UPDATE tokens SET revoked = TRUE WHERE subject = \(id) AND NOT revoked", logger: logger)
            try await connection.query("DELETE FROM authorization_codes WHERE user_id = \(id)", logger: logger)
            try await connection.query("DELETE FROM consents WHERE user_id = \(id)", logger: logger)
            return true
        }
    }

    static func userRecord(_ row: PostgresRow) throws -> UserRecord {
        let (id, username, hash) = try row.decode((String, String, String).self)
        return UserRecord(id: id, username: username, passwordHash: hash)
    }

    // MARK: Codes

    public func insertCode(_ code: AuthorizationCodeRecord) async throws {
        try await execute("insertCode", """
            INSERT INTO authorization_codes(code_hash, client_id, user_id, redirect_uri, redirect_uri_given, scope, code_challenge,
              auth_time, issued_at, expires_at, family_id, used_at)
            VALUES (\(code.codeHash), \(code.clientID), \(code.userID), \(code.redirectURI), \(code.redirectURIWasGiven), \(code.scope),
              \(code.codeChallenge), \(code.authTime), \(code.issuedAt), \(code.expiresAt), \(code.familyID), NULL)
            """)
    }

    public func code(hash: String) async throws -> AuthorizationCodeRecord? {
        try await rows("code", "SELECT * FROM authorization_codes WHERE code_hash = \(hash)", Self.codeRecord).first
    }

    public func redeemCode(hash: String, at now: Int, issuing tokens: [TokenRecord]) async throws -> CodeRedemption {
        // One transaction on one connection: the UPDATE's row lock makes a concurrent redemption (on any replica)
        // wait, re-check `used_at IS NULL` on the committed row and match nothing; and the mark commits with the
        // tokens, so a failure between them (the database restarting under load) rolls both back — the code stays
        // usable and the client's retry is a first use — and nobody sees the code used before its tokens exist.
        let redeemed = try await transaction("redeemCode") { connection, logger in
            var marked: AuthorizationCodeRecord?
            let rows = try await connection.query(
                "UPDATE authorization_codes SET used_at = \(now) WHERE code_hash = \(hash) AND used_at IS NULL RETURNING *", logger: logger
            )
            for try await row in rows { marked = try Self.codeRecord(row) }
            if marked != nil, !tokens.isEmpty {
                try await connection.query(Self.insertQuery(tokens), logger: logger)
            }
            return marked
        }
        if let redeemed { return .redeemed(redeemed) }
        if let record = try await code(hash: hash) { return .alreadyUsed(record) }
        return .notFound
    }

    public func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws {
        // The caller saw the code used: the transaction that marked it had committed, and with it the tokens it
        // issued, so the revocation (a later statement, a later snapshot) reaches them. The mark is kept for the
        // record (when the code was replayed).
        try await execute("recordCodeReplay", "UPDATE authorization_codes SET replayed_at = COALESCE(replayed_at, \(now)) WHERE code_hash = \(hash)")
        try await revokeFamily(familyID)
    }

    static func codeRecord(_ row: PostgresRow) throws -> AuthorizationCodeRecord {
        let row = row.makeRandomAccess()
        return AuthorizationCodeRecord(
            codeHash: try row["code_hash"].decode(String.self),
            clientID: try row["client_id"].decode(String.self),
            userID: try row["user_id"].decode(String.self),
            redirectURI: try row["redirect_uri"].decode(String.self),
            redirectURIWasGiven: try row["redirect_uri_given"].decode(Bool.self),
            scope: try row["scope"].decode(String.self),
            codeChallenge: try row["code_challenge"].decode(String?.self),
            authTime: try row["auth_time"].decode(Int.self),
            issuedAt: try row["issued_at"].decode(Int.self),
            expiresAt: try row["expires_at"].decode(Int.self),
            familyID: try row["family_id"].decode(String.self),
            usedAt: try row["used_at"].decode(Int?.self)
        )
    }

    // MARK: Tokens

    public func allocateTokenIDs(_ count: Int) async throws -> [Int64] {
        // 1023 calls in 1024 are answered from the block in memory, without the deadline's two tasks.
        if let ids = ids.allocateFromBlock(count) { return ids }
        do {
            return try await Deadline.run(configuration.callDeadline, operation: "allocateTokenIDs") { [ids] in
                try await ids.allocate(count)
            }
        } catch {
            throw PostgresErrors.storeError(error, doing: "allocateTokenIDs")
        }
    }

    private static let tokenColumns = "id, token_hash, kind, client_id, subject, scope, issued_at, expires_at, family_id, family_expires_at, grant_type, auth_time, revoked, rotated_at"

    public func insertTokens(_ tokens: [TokenRecord]) async throws {
        guard !tokens.isEmpty else { return }
        try await tokenBatcher.submit(tokens, on: batchLoop)
    }

    /// One multi-row INSERT: the tokens of a batch (and so those of one response) commit together or not at all.
    static func insertTokenRows(_ tokens: [TokenRecord], client: PostgresClient, logger: Logger, deadline: Duration) async throws {
        let query = insertQuery(tokens)
        do {
            try await Deadline.run(deadline, operation: "insertTokens") {
                for try await _ in try await client.query(query, logger: logger) {}
            }
        } catch {
            throw PostgresErrors.storeError(error, doing: "insertTokens")
        }
    }

    /// The multi-row INSERT of `tokens` (14 binds a row).
    static func insertQuery(_ tokens: [TokenRecord]) -> PostgresQuery {
        var binds = PostgresBindings(capacity: tokens.count * 14)
        var sql = "INSERT INTO tokens(\(Self.tokenColumns)) VALUES "
        for (index, token) in tokens.enumerated() {
            let base = index * 14
            sql += index == 0 ? "(" : ",("
            sql += (1...14).map { "$\(base + $0)" }.joined(separator: ",")
            sql += ")"
            binds.append(token.id)
            binds.append(token.tokenHash)
            binds.append(token.kind.rawValue)
            binds.append(token.clientID)
            binds.append(token.userID)
            binds.append(token.scope)
            binds.append(token.issuedAt)
            binds.append(token.expiresAt)
            binds.append(token.familyID)
            binds.append(token.familyExpiresAt)
            binds.append(token.grantType)
            binds.append(token.authTime)
            binds.append(token.revoked)
            binds.append(token.rotatedAt)
        }
        return PostgresQuery(unsafeSQL: sql, binds: binds)
    }

    public func token(_ locator: TokenLocator) async throws -> TokenRecord? {
        guard let record = try await rows("token", "SELECT * FROM tokens WHERE id = \(locator.id)", Self.tokenRecord).first else { return nil }
        return SecureToken.constantTimeEquals(record.tokenHash, locator.hash) ? record : nil
    }

    public func markRotated(_ locator: TokenLocator, at now: Int) async throws -> RotationMark {
        let marked = try await rows("markRotated", """
            UPDATE tokens SET rotated_at = \(now)
            WHERE id = \(locator.id) AND token_hash = \(locator.hash) AND kind = 'refresh' AND rotated_at IS NULL AND NOT revoked
            RETURNING *
            """, Self.tokenRecord)
        if let record = marked.first { return .rotatedNow(record) }
        guard let record = try await rows("markRotated", "SELECT * FROM tokens WHERE id = \(locator.id) AND kind = 'refresh'", Self.tokenRecord).first,
              SecureToken.constantTimeEquals(record.tokenHash, locator.hash)
        else { return .notFound }
        return record.revoked ? .revoked(record) : .rotatedBefore(record)
    }

    public func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark {
        // The mark and the successors commit together: a database that goes away between them (a restart under
        // load) rolls the mark back, so the client's retry with the same refresh token is a first use again rather
        // than a reuse that would revoke its family — a rotation is never half done.
        let rotated = try await transaction("rotate") { connection, logger in
            var marked: TokenRecord?
            let rows = try await connection.query("""
                UPDATE tokens SET rotated_at = \(now)
                WHERE id = \(locator.id) AND token_hash = \(locator.hash) AND kind = 'refresh' AND rotated_at IS NULL AND NOT revoked
                RETURNING *
                """, logger: logger)
            for try await row in rows { marked = try Self.tokenRecord(row) }
            if marked != nil, !successors.isEmpty {
                try await connection.query(Self.insertQuery(successors), logger: logger)
            }
            return marked
        }
        if let rotated { return .rotatedNow(rotated) }
        return try await markRotated(locator, at: now)  // not rotated by this call: what it was (rotated, revoked, unknown)
    }

    public func revokeFamily(_ familyID: String) async throws {
        try await execute("revokeFamily", "UPDATE tokens SET revoked = TRUE WHERE family_id = \(familyID) AND NOT revoked")
    }

    public func revokeToken(_ locator: TokenLocator) async throws -> Bool {
        let rows = try await rows("revokeToken", "UPDATE tokens SET revoked = TRUE WHERE id = \(locator.id) AND token_hash = \(locator.hash) RETURNING id") { row in
            try row.decode(Int64.self)
        }
        return !rows.isEmpty
    }

    static func tokenRecord(_ row: PostgresRow) throws -> TokenRecord {
        let row = row.makeRandomAccess()
        let kind = try row["kind"].decode(String.self)
        guard let tokenKind = TokenKind(rawValue: kind) else {
            throw StoreError(code: .corruptRow, message: "token kind '\(kind)'")
        }
        return TokenRecord(
            id: try row["id"].decode(Int64.self),
            tokenHash: try row["token_hash"].decode(String.self),
            kind: tokenKind,
            clientID: try row["client_id"].decode(String.self),
            userID: try row["subject"].decode(String?.self),
            scope: try row["scope"].decode(String.self),
            issuedAt: try row["issued_at"].decode(Int.self),
            expiresAt: try row["expires_at"].decode(Int.self),
            familyID: try row["family_id"].decode(String?.self),
            familyExpiresAt: try row["family_expires_at"].decode(Int?.self),
            grantType: try row["grant_type"].decode(String.self),
            authTime: try row["auth_time"].decode(Int?.self),
            revoked: try row["revoked"].decode(Bool.self),
            rotatedAt: try row["rotated_at"].decode(Int?.self)
        )
    }

    // MARK: Consent

    public func consentedScopes(userID: String, clientID: String) async throws -> Set<String> {
        let scopes = try await rows("consentedScopes", "SELECT scopes FROM consents WHERE user_id = \(userID) AND client_id = \(clientID)") { row in
            try row.decode(String.self)
        }
        return Set((scopes.first ?? "").split(separator: " ").map(String.init))
    }

    public func saveConsent(userID: String, clientID: String, scopes: Set<String>, at now: Int) async throws {
        // The union with what was consented before is computed in the statement, under the row lock of the
        // conflicting row: two replicas saving consent for one user and client at once both keep their scopes.
        let given = scopes.sorted().joined(separator: " ")
        try await execute("saveConsent", """
            INSERT INTO consents(user_id, client_id, scopes, granted_at) VALUES (\(userID), \(clientID), \(given), \(now))
            ON CONFLICT(user_id, client_id) DO UPDATE SET granted_at = excluded.granted_at, scopes = (
              SELECT COALESCE(string_agg(DISTINCT scope, ' ' ORDER BY scope), '')
              FROM unnest(string_to_array(consents.scopes || ' ' || excluded.scopes, ' ')) AS scope WHERE scope <> '')
            """)
    }

    // MARK: Helpers

    /// Runs one statement under the call deadline, discarding rows.
    func execute(_ operation: String, _ query: PostgresQuery) async throws {
        _ = try await rows(operation, query) { _ in () }
    }

    /// Runs one statement under the call deadline and maps its rows; errors become `StoreError`s.
    func rows<T: Sendable>(_ operation: String, _ query: PostgresQuery, _ map: @escaping @Sendable (PostgresRow) throws -> T) async throws -> [T] {
        do {
            return try await Deadline.run(configuration.callDeadline, operation: operation) { [client, logger] in
                var result: [T] = []
                for try await row in try await client.query(query, logger: logger) {
                    result.append(try map(row))
                }
                return result
            }
        } catch {
            throw PostgresErrors.storeError(error, doing: operation)
        }
    }

    /// Runs `body` in one transaction (READ COMMITTED) on one pooled connection, under the call deadline.
    func transaction<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T) async throws -> T {
        do {
            return try await Deadline.run(configuration.callDeadline, operation: operation) { [client, logger] in
                try await client.withTransaction(logger: logger) { connection in
                    try await body(connection, logger)
                }
            }
        } catch {
            throw PostgresErrors.storeError(error, doing: operation)
        }
    }
}
