import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import GatehouseTokens
import SQLiteNIO

/// The embedded store: SQLite in WAL mode. Writes go through one connection, reads through another, so a
/// commit's fsync never stalls lookups. Token inserts from concurrent requests are committed together
/// (group commit): one transaction and one fsync per batch, and no caller is answered before its batch is durable.
public final class SQLiteAuthStore: AuthStore {
    /// How the store opens its file.
    public struct Configuration: Sendable {
        /// Path of the database file.
        public var path: String
        /// `FULL` fsyncs every commit (survives power loss); `NORMAL` survives process crashes only.
        /// Default `true` (FULL).
        public var fullSync: Bool
        /// Most token rows committed in one batch. Default 512.
        public var maxBatchSize: Int
        /// Most rows one purge statement deletes (the purge repeats it until done). Default 1000.
        public var purgeBatchSize: Int

        public init(path: String, fullSync: Bool = true, maxBatchSize: Int = 512, purgeBatchSize: Int = 1000) {
            self.path = path
            self.fullSync = fullSync
            self.maxBatchSize = maxBatchSize
            self.purgeBatchSize = purgeBatchSize
        }
    }

    let writer: SQLiteConnection
    let reader: SQLiteConnection
    let logger: Logger
    let purgeBatchSize: Int
    private let tokenBatcher: GroupCommitBatcher<TokenRecord>
    /// Statements share the writer; a transaction (code redemption, refresh rotation) has it alone.
    let writerGate: WriterGate
    /// The last token id handed out. One server process owns a SQLite file, so a counter seeded from the table
    /// is enough (PostgreSQL deployments with replicas use a sequence instead).
    private let lastTokenID: NIOLockedValueBox<Int64>

    private init(writer: SQLiteConnection, reader: SQLiteConnection, configuration: Configuration, lastTokenID: Int64, logger: Logger) {
        self.writer = writer
        self.reader = reader
        self.logger = logger
        self.purgeBatchSize = configuration.purgeBatchSize
        self.lastTokenID = NIOLockedValueBox(lastTokenID)
        let gate = WriterGate()
        self.writerGate = gate
        self.tokenBatcher = GroupCommitBatcher(maxBatchSize: configuration.maxBatchSize) { batch in
            gate.shared(on: writer.eventLoop) { SQLiteAuthStore.insertTokenRows(batch, on: writer) }
        }
    }

    /// Opens (creating if needed) and migrates the database.
    public static func open(_ configuration: Configuration, logger: Logger, threadPool: NIOThreadPool = .singleton, eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.any()) async throws -> SQLiteAuthStore {
        let writer: SQLiteConnection
        do {
            writer = try await SQLiteConnection.open(storage: .file(path: configuration.path), threadPool: threadPool, logger: logger, on: eventLoop)
        } catch {
            throw StoreError(code: .openFailed, message: "cannot open \(configuration.path): \(error)")
        }
        do {
            _ = try await writer.query("PRAGMA journal_mode=WAL")
            _ = try await writer.query("PRAGMA synchronous=\(configuration.fullSync ? "FULL" : "NORMAL")")
            _ = try await writer.query("PRAGMA foreign_keys=ON")
            _ = try await writer.query("PRAGMA busy_timeout=5000")
            // Fewer, larger checkpoints: pages dirtied by consecutive batches are copied to the database once.
            _ = try await writer.query("PRAGMA wal_autocheckpoint=4000")
            _ = try await writer.query("PRAGMA cache_size=-32768")
            try await SchemaMigrations.migrate(writer)
        } catch let error as StoreError {
            try? await writer.close()
            throw error
        } catch {
            try? await writer.close()
            throw StoreError(code: .migrationFailed, message: "\(configuration.path): \(error)")
        }
        let reader = try await SQLiteConnection.open(storage: .file(path: configuration.path), threadPool: threadPool, logger: logger, on: eventLoop)
        _ = try await reader.query("PRAGMA query_only=ON")
        let maxID = try await writer.query("SELECT COALESCE(MAX(id), 0) AS id FROM tokens").first?.column("id")?.integer ?? 0
        return SQLiteAuthStore(writer: writer, reader: reader, configuration: configuration, lastTokenID: Int64(maxID), logger: logger)
    }

    public func close() async throws {
        try await reader.close()
        try await writer.close()
    }

    // MARK: Clients

    public func upsertClient(_ client: ClientRecord) async throws {
        try await run(writer, """
            INSERT INTO clients(id, name, type, secret_hash, grants, scopes, redirect_uris, from_configuration, audiences, may_introspect,
              default_scopes, access_token_format, incarnation, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, strftime('%s','now'))
            ON CONFLICT(id) DO UPDATE SET name=excluded.name, type=excluded.type, secret_hash=excluded.secret_hash,
              grants=excluded.grants, scopes=excluded.scopes, redirect_uris=excluded.redirect_uris,
              from_configuration=excluded.from_configuration, audiences=excluded.audiences, may_introspect=excluded.may_introspect,
              default_scopes=excluded.default_scopes, access_token_format=excluded.access_token_format
            """, [
                .text(client.id), .text(client.name), .text(client.type), client.secretHash.map(SQLiteData.text) ?? .null,
                .text(client.grants.joined(separator: " ")), .text(client.scopes.joined(separator: " ")),
                .text(client.redirectURIs.joined(separator: " ")), .integer(client.fromConfiguration ? 1 : 0),
                .text(client.audiences.joined(separator: " ")), .integer(client.mayIntrospect ? 1 : 0),
                .text(client.defaultScopes.joined(separator: " ")), .text(client.accessTokenFormat), .text(client.incarnation),
            ])
    }

    public func client(id: String) async throws -> ClientRecord? {
        try await run(reader, "SELECT * FROM clients WHERE id = ?", [.text(id)]).first.map(Self.clientRecord)
    }

    public func listClients() async throws -> [ClientRecord] {
        try await run(reader, "SELECT * FROM clients ORDER BY id", []).map(Self.clientRecord)
    }

    public func removeClient(id: String) async throws -> Bool {
        let rows = try await run(writer, "DELETE FROM clients WHERE id = ? RETURNING id", [.text(id)])
        try await run(writer, "UPDATE tokens SET revoked = 1 WHERE client_id = ?", [.text(id)])
        try await run(writer, "DELETE FROM authorization_codes WHERE client_id = ?", [.text(id)])
        return !rows.isEmpty
    }

    public func removeConfigurationClients(notIn ids: Set<String>) async throws {
        let configured = try await run(reader, "SELECT id FROM clients WHERE from_configuration = 1", [])
        for row in configured {
            guard let id = row.column("id")?.string, !ids.contains(id) else { continue }
            try await removeClient(id: id)
        }
    }

    static func clientRecord(_ row: SQLiteRow) -> ClientRecord {
        func list(_ name: String) -> [String] {
            (row.column(name)?.string ?? "").split(separator: " ").map(String.init)
        }
        return ClientRecord(
            id: row.column("id")?.string ?? "",
            name: row.column("name")?.string ?? "",
            type: row.column("type")?.string ?? "confidential",
            secretHash: row.column("secret_hash")?.string,
            grants: list("grants"),
            scopes: list("scopes"),
            redirectURIs: list("redirect_uris"),
            fromConfiguration: row.column("from_configuration")?.integer == 1,
            audiences: list("audiences"),
            mayIntrospect: row.column("may_introspect")?.integer == 1,
            defaultScopes: list("default_scopes"),
            accessTokenFormat: row.column("access_token_format")?.string ?? "opaque",
            incarnation: row.column("incarnation")?.string ?? ""
        )
    }

    // MARK: Users

    public func upsertUser(_ user: UserRecord) async throws {
        try await run(writer, """
            INSERT INTO users(id, username, password_hash, created_at) VALUES (?, ?, ?, strftime('%s','now'))
            ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash
            """, [.text(user.id), .text(user.username), .text(user.passwordHash)])
    }

    public func user(username: String) async throws -> UserRecord? {
        try await run(reader, "SELECT * FROM users WHERE username = ?", [.text(username)]).first.map(Self.userRecord)
    }

    public func user(id: String) async throws -> UserRecord? {
        try await run(reader, "SELECT * FROM users WHERE id = ?", [.text(id)]).first.map(Self.userRecord)
    }

    public func removeUser(username: String) async throws -> Bool {
        let rows = try await run(writer, "DELETE FROM users WHERE username = ? RETURNING id", [.text(username)])
        guard let id = rows.first?.column("id")?.string else { return false }
        try await run(writer, "UPDATE tokens SET revoked = 1 WHERE subject = ?", [.text(id)])
        try await run(writer, "DELETE FROM authorization_codes WHERE user_id = ?", [.text(id)])
        try await run(writer, "DELETE FROM consents WHERE user_id = ?", [.text(id)])
        return true
    }

    static func userRecord(_ row: SQLiteRow) -> UserRecord {
        UserRecord(id: row.column("id")?.string ?? "", username: row.column("username")?.string ?? "", passwordHash: row.column("password_hash")?.string ?? "")
    }

    // MARK: Codes

    public func insertCode(_ code: AuthorizationCodeRecord) async throws {
        try await run(writer, """
            INSERT INTO authorization_codes(code_hash, client_id, user_id, redirect_uri, redirect_uri_given, scope, code_challenge,
              auth_time, issued_at, expires_at, family_id, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
            """, [
                .text(code.codeHash), .text(code.clientID), .text(code.userID), .text(code.redirectURI),
                .integer(code.redirectURIWasGiven ? 1 : 0), .text(code.scope), code.codeChallenge.map(SQLiteData.text) ?? .null,
                .integer(code.authTime), .integer(code.issuedAt), .integer(code.expiresAt), .text(code.familyID),
            ])
    }

    public func code(hash: String) async throws -> AuthorizationCodeRecord? {
        try await run(reader, "SELECT * FROM authorization_codes WHERE code_hash = ?", [.text(hash)]).first.map(Self.codeRecord)
    }

    public func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws {
        // The caller saw the code used, and the mark commits with the tokens it issued (`redeemCode`), so they are
        // committed and this revocation reaches them. The mark is kept for the record (when it was replayed).
        try await run(writer, "UPDATE authorization_codes SET replayed_at = COALESCE(replayed_at, ?) WHERE code_hash = ?", [.integer(now), .text(hash)])
        try await revokeFamily(familyID)
    }

    public func redeemCode(hash: String, at now: Int, issuing tokens: [TokenRecord]) async throws -> CodeRedemption {
        // One write transaction with the writer to itself: the mark and the tokens commit together or not at all,
        // and no reader (the reader connection sees committed data only) finds the code used without its tokens.
        let marked = try await transaction { (writer: SQLiteConnection) -> AuthorizationCodeRecord? in
            let marked = try await writer.query("UPDATE authorization_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL RETURNING *", [.integer(now), .text(hash)])
            guard let row = marked.first else { return nil }
            if !tokens.isEmpty { try await Self.insertTokenRows(tokens, on: writer).get() }
            return Self.codeRecord(row)
        }
        if let marked { return .redeemed(marked) }
        let existing = try await run(writer, "SELECT * FROM authorization_codes WHERE code_hash = ?", [.text(hash)])
        if let row = existing.first { return .alreadyUsed(Self.codeRecord(row)) }
        return .notFound
    }

    static func codeRecord(_ row: SQLiteRow) -> AuthorizationCodeRecord {
        AuthorizationCodeRecord(
            codeHash: row.column("code_hash")?.string ?? "",
            clientID: row.column("client_id")?.string ?? "",
            userID: row.column("user_id")?.string ?? "",
            redirectURI: row.column("redirect_uri")?.string ?? "",
            redirectURIWasGiven: row.column("redirect_uri_given")?.integer == 1,
            scope: row.column("scope")?.string ?? "",
            codeChallenge: row.column("code_challenge")?.string,
            authTime: Int(row.column("auth_time")?.integer ?? 0),
            issuedAt: Int(row.column("issued_at")?.integer ?? 0),
            expiresAt: Int(row.column("expires_at")?.integer ?? 0),
            familyID: row.column("family_id")?.string ?? "",
            usedAt: row.column("used_at")?.integer.map { Int($0) }
        )
    }

    // MARK: Tokens

    public func allocateTokenIDs(_ count: Int) async throws -> [Int64] {
        lastTokenID.withLockedValue { last in
            let first = last + 1
            last += Int64(count)
            return Array(first...last)
        }
    }

    public func insertTokens(_ tokens: [TokenRecord]) async throws {
        guard !tokens.isEmpty else { return }
        do {
            try await tokenBatcher.submit(tokens, on: writer.eventLoop)
        } catch {
            throw StoreError(code: .queryFailed, message: "\(error)")
        }
    }

    private static let tokenColumns = "id, token_hash, kind, client_id, subject, scope, issued_at, expires_at, family_id, family_expires_at, grant_type, auth_time, revoked, rotated_at"

    static func insertTokenRows(_ tokens: [TokenRecord], on connection: SQLiteConnection) -> EventLoopFuture<Void> {
        var binds: [SQLiteData] = []
        binds.reserveCapacity(tokens.count * 14)
        var sql = "INSERT INTO tokens(\(tokenColumns)) VALUES "
        for (index, token) in tokens.enumerated() {
            sql += index == 0 ? "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)" : ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            binds.append(.integer(Int(token.id)))
            binds.append(.text(token.tokenHash))
            binds.append(.text(token.kind.rawValue))
            binds.append(.text(token.clientID))
            binds.append(token.userID.map(SQLiteData.text) ?? .null)
            binds.append(.text(token.scope))
            binds.append(.integer(token.issuedAt))
            binds.append(.integer(token.expiresAt))
            binds.append(token.familyID.map(SQLiteData.text) ?? .null)
            binds.append(token.familyExpiresAt.map { SQLiteData.integer($0) } ?? .null)
            binds.append(.text(token.grantType))
            binds.append(token.authTime.map { SQLiteData.integer($0) } ?? .null)
            binds.append(.integer(token.revoked ? 1 : 0))
            binds.append(token.rotatedAt.map { SQLiteData.integer($0) } ?? .null)
        }
        return connection.query(sql, binds).map { _ in }
    }

    public func token(_ locator: TokenLocator) async throws -> TokenRecord? {
        guard let row = try await run(reader, "SELECT * FROM tokens WHERE id = ?", [.integer(Int(locator.id))]).first else { return nil }
        let record = Self.tokenRecord(row)
        return SecureToken.constantTimeEquals(record.tokenHash, locator.hash) ? record : nil
    }

    private static let rotateSQL = "UPDATE tokens SET rotated_at = ? WHERE id = ? AND token_hash = ? AND kind = 'refresh' AND rotated_at IS NULL AND revoked = 0 RETURNING *"

    public func markRotated(_ locator: TokenLocator, at now: Int) async throws -> RotationMark {
        let marked = try await run(writer, Self.rotateSQL, [.integer(now), .integer(Int(locator.id)), .text(locator.hash)])
        if let row = marked.first { return .rotatedNow(Self.tokenRecord(row)) }
        return try await rotationState(locator)
    }

    public func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark {
        // As with a code: the mark and the successors in one write transaction, so a failure between them (a full
        // disk, a crash) leaves the token unrotated and the client's retry is a first use, not a reuse.
        let rotated = try await transaction { (writer: SQLiteConnection) -> TokenRecord? in
            let marked = try await writer.query(Self.rotateSQL, [.integer(now), .integer(Int(locator.id)), .text(locator.hash)])
            guard let row = marked.first else { return nil }
            if !successors.isEmpty { try await Self.insertTokenRows(successors, on: writer).get() }
            return Self.tokenRecord(row)
        }
        if let rotated { return .rotatedNow(rotated) }
        return try await rotationState(locator)
    }

    /// What a refresh token that this call did not rotate is: rotated before, revoked, or unknown.
    private func rotationState(_ locator: TokenLocator) async throws -> RotationMark {
        guard let row = try await run(writer, "SELECT * FROM tokens WHERE id = ? AND kind = 'refresh'", [.integer(Int(locator.id))]).first else { return .notFound }
        let record = Self.tokenRecord(row)
        guard SecureToken.constantTimeEquals(record.tokenHash, locator.hash) else { return .notFound }
        return record.revoked ? .revoked(record) : .rotatedBefore(record)
    }

    public func revokeFamily(_ familyID: String) async throws {
        try await run(writer, "UPDATE tokens SET revoked = 1 WHERE family_id = ? AND revoked = 0", [.text(familyID)])
    }

    public func revokeToken(_ locator: TokenLocator) async throws -> Bool {
        !(try await run(writer, "UPDATE tokens SET revoked = 1 WHERE id = ? AND token_hash = ? RETURNING id", [.integer(Int(locator.id)), .text(locator.hash)])).isEmpty
    }

    static func tokenRecord(_ row: SQLiteRow) -> TokenRecord {
        func int(_ name: String) -> Int? { row.column(name)?.integer.map { Int($0) } }
        return TokenRecord(
            id: Int64(row.column("id")?.integer ?? 0),
            tokenHash: row.column("token_hash")?.string ?? "",
            kind: TokenKind(rawValue: row.column("kind")?.string ?? "") ?? .access,
            clientID: row.column("client_id")?.string ?? "",
            userID: row.column("subject")?.string,
            scope: row.column("scope")?.string ?? "",
            issuedAt: int("issued_at") ?? 0,
            expiresAt: int("expires_at") ?? 0,
            familyID: row.column("family_id")?.string,
            familyExpiresAt: int("family_expires_at"),
            grantType: row.column("grant_type")?.string ?? "",
            authTime: int("auth_time"),
            revoked: int("revoked") == 1,
            rotatedAt: int("rotated_at")
        )
    }

    // MARK: Consent

    public func consentedScopes(userID: String, clientID: String) async throws -> Set<String> {
        let rows = try await run(reader, "SELECT scopes FROM consents WHERE user_id = ? AND client_id = ?", [.text(userID), .text(clientID)])
        return Set((rows.first?.column("scopes")?.string ?? "").split(separator: " ").map(String.init))
    }

    public func saveConsent(userID: String, clientID: String, scopes: Set<String>, at now: Int) async throws {
        let merged = try await consentedScopes(userID: userID, clientID: clientID).union(scopes)
        try await run(writer, """
            INSERT INTO consents(user_id, client_id, scopes, granted_at) VALUES (?, ?, ?, ?)
            ON CONFLICT(user_id, client_id) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at
            """, [.text(userID), .text(clientID), .text(merged.sorted().joined(separator: " ")), .integer(now)])
    }

    // MARK: Maintenance

    public func purgeExpired(now: Int) async throws -> Int {
        // In batches of `purgeBatchSize` rows, one short write transaction each: a purge of a large backlog never
        // holds SQLite's single write lock for long, so token issuance (on the same writer) interleaves with it.
        let limit = max(1, purgeBatchSize)
        var removed = 0
        let statements: [(String, [SQLiteData])] = [
            ("DELETE FROM authorization_codes WHERE rowid IN (SELECT rowid FROM authorization_codes WHERE expires_at < ? LIMIT ?) RETURNING 1", [.integer(now - 600), .integer(limit)]),
            // A refresh token stays while its family can still live, so that reuse of an old member is still detected.
            ("""
            DELETE FROM tokens WHERE rowid IN (SELECT rowid FROM tokens WHERE (kind = 'access' AND expires_at < ?)
              OR (kind = 'refresh' AND expires_at < ? AND (family_expires_at IS NULL OR family_expires_at < ?)) LIMIT ?)
            RETURNING 1
            """, [.integer(now), .integer(now), .integer(now), .integer(limit)]),
            ("DELETE FROM jwt_revocations WHERE rowid IN (SELECT rowid FROM jwt_revocations WHERE expires_at < ? LIMIT ?) RETURNING 1", [.integer(now - jwtRevocationRetention), .integer(limit)]),
        ]
        for (sql, binds) in statements {
            while true {
                let batch = try await run(writer, sql, binds).count
                removed += batch
                if batch < limit { break }
            }
        }
        return removed
    }

    public func ping() async throws {
        try await run(reader, "SELECT 1", [])
    }

    // MARK: Helpers

    /// Runs one statement (on the writer: through the gate, never inside another caller's transaction).
    @discardableResult
    func run(_ connection: SQLiteConnection, _ sql: String, _ binds: [SQLiteData]) async throws -> [SQLiteRow] {
        do {
            if connection === writer {
                return try await writerGate.shared { try await connection.query(sql, binds) }
            }
            return try await connection.query(sql, binds)
        } catch {
            throw StoreError(code: .queryFailed, message: "\(error)")
        }
    }

    /// Runs `body` in one write transaction (`BEGIN IMMEDIATE` … `COMMIT`) with the writer to itself; any error
    /// rolls it back and is thrown as a `StoreError`, so nothing of it stays.
    func transaction<T: Sendable>(_ body: (SQLiteConnection) async throws -> T) async throws -> T {
        do {
            return try await writerGate.exclusive {
                _ = try await writer.query("BEGIN IMMEDIATE")
                do {
                    let result = try await body(writer)
                    _ = try await writer.query("COMMIT")
                    return result
                } catch {
                    _ = try? await writer.query("ROLLBACK")
                    throw error
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(code: .queryFailed, message: "\(error)")
        }
    }
}
