import GatehouseStore
import GatehouseStorePostgres
import GatehouseTokens
import GatehouseTestSupport
import Logging
import NIOPosix
import PostgresNIO
import Testing

/// Interleavings forced with locks the test holds (never a sleep): a redemption stalled between its two writes,
/// and the login throttle's read-modify-write raced from two replicas.
extension PostgresReplicaTests {
    /// A connection of the test's own to the database (over TCP with the password, as the stores connect).
    func rawConnection(_ database: String) async throws -> PostgresConnection {
        let server = try #require(PostgresServer.current)
        let configuration = PostgresConnection.Configuration(
            host: "127.0.0.1", port: server.port, username: PostgresServer.superuser, password: PostgresServer.password, database: database, tls: .disable
        )
        return try await PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: 1, logger: Logger(label: "test"))
    }

    /// Polls (every 10 ms, up to 10 s) until `count` sessions of the database wait for a lock.
    func waitForLockWaiters(_ count: Int, on observer: PostgresConnection) async throws {
        let waited = try await eventually(timeout: .seconds(10)) {
            let rows = try await observer.query(
                "SELECT count(*)::BIGINT FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", logger: Logger(label: "test")
            )
            var waiting = 0
            for try await value in rows.decode(Int.self) { waiting = value }
            return waiting >= count
        }
        if !waited { Issue.record("fewer than \(count) sessions waited for a lock within 10 s") }
    }

    /// The winning redemption is held between its two writes (the test holds an uncommitted row with the id of the
    /// winner's access token, so its INSERT waits): meanwhile the code reads as unused at the other replica, and a
    /// concurrent redemption there waits on the code's row. When the test lets go, the winner commits its mark and
    /// tokens together; the other finds the code used and, as the replay, revokes the family — which reaches the
    /// winner's tokens with no read-back (the old `codeWasReplayed`): no interleaving lets a replay see the code
    /// used before its tokens exist.
    @Test func aReplayWaitsForTheStalledWinnerAndThenRevokesWhatItStored() async throws {
        let server = try #require(PostgresServer.current)
        let database = try server.createDatabase()
        defer { server.dropDatabase(database) }
        var configuration = server.configuration(database: database)
        configuration.statementTimeoutMilliseconds = 20_000  // the stalled winner waits on the test's lock
        let stores = [
            try await PostgresAuthStore.open(configuration, logger: Logger(label: "a")), try await PostgresAuthStore.open(configuration, logger: Logger(label: "b")),
        ]
        let holder = try await rawConnection(database)
        let observer = try await rawConnection(database)
        do {
            try await stores[0].insertCode(TestTokens.code(family: "fam"))
            let winnerAccess = TestTokens.accessToken("token-0", family: "fam")
            let winnerRefresh = TestTokens.refreshToken("token-1", family: "fam")
            try await holder.query("BEGIN", logger: Logger(label: "test"))
            try await holder.query("""
                INSERT INTO tokens(id, token_hash, kind, client_id, scope, issued_at, expires_at, grant_type)
                VALUES (\(winnerAccess.id), 'held-by-the-test', 'access', 'c', 'a', 1, 2, 'test')
                """, logger: Logger(label: "test"))

            let winner = Task { try await stores[0].redeemCode(hash: "code-hash", at: 10, issuing: [winnerAccess, winnerRefresh]) }
            try await waitForLockWaiters(1, on: observer)
            // Marked, not committed: no one else sees the code used, so no one can replay it yet.
            #expect(try await stores[1].code(hash: "code-hash")?.usedAt == nil)
            let loser = Task { try await stores[1].redeemCode(hash: "code-hash", at: 11, issuing: [TestTokens.accessToken("token-2", family: "fam")]) }
            try await waitForLockWaiters(2, on: observer)

            try await holder.query("ROLLBACK", logger: Logger(label: "test"))
            guard case .redeemed = try await winner.value else { Issue.record("the stalled redemption should win"); return }
            guard case .alreadyUsed(let used) = try await loser.value else { Issue.record("the other should find the code used"); return }
            #expect(used.usedAt == 10)
            try await stores[1].recordCodeReplay(hash: "code-hash", familyID: used.familyID, at: 12)
            #expect(try await stores[0].token(TestTokens.locator("token-0"))?.revoked == true)
            #expect(try await stores[0].token(TestTokens.locator("token-1"))?.revoked == true)
            #expect(try await stores[0].token(TestTokens.locator("token-2")) == nil)
        } catch {
            try? await holder.close()
            try? await observer.close()
            for store in stores { try? await store.close() }
            throw error
        }
        try await holder.close()
        try await observer.close()
        for store in stores { try await store.close() }
    }

    /// 40 updates of two keys at once from two replicas, half taking the keys in the other order: every update is
    /// counted (no lost read-modify-write), and none deadlocks (the store locks keys in sorted order).
    @Test func loginThrottleUpdatesAreAtomicAcrossReplicas() async throws {
        try await withReplicas { stores in
            let keys = ["key-a", "key-b"]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for attempt in 0..<40 {
                    let store = stores[attempt % 2]
                    let order = attempt % 4 < 2 ? keys : Array(keys.reversed())
                    group.addTask {
                        try await store.updateLoginThrottle(keyHashes: order) { (rows: [String: LoginThrottleRecord]) -> (answer: Void, entries: [String: LoginThrottleRecord]) in
                            var next = rows
                            for key in order {
                                var record = rows[key] ?? LoginThrottleRecord(failures: 0, lastFailure: 0)
                                record.failures += 1
                                record.lastFailure = max(record.lastFailure, 100 + attempt)
                                next[key] = record
                            }
                            return ((), next)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seen = try await stores[0].updateLoginThrottle(keyHashes: keys) { rows in (rows, rows) }
            #expect(seen["key-a"]?.failures == 40)
            #expect(seen["key-b"]?.failures == 40)
            #expect(seen["key-a"]?.lastFailure == 139)
        }
    }

    /// A sign-in attempt whose throttle key another transaction holds locked waits at most the lock timeout, then
    /// fails as unavailable (the sign-in answers 503): a burst of guesses at one username cannot hold the pool's
    /// connections. The statement timeout is raised to 20 s so that only the lock timeout can end the wait.
    @Test func aThrottleKeyHeldLockedFailsAsUnavailableAtTheLockTimeout() async throws {
        let server = try #require(PostgresServer.current)
        let database = try server.createDatabase()
        defer { server.dropDatabase(database) }
        var configuration = server.configuration(database: database)
        configuration.statementTimeoutMilliseconds = 20_000
        let store = try await PostgresAuthStore.open(configuration, logger: Logger(label: "a"))
        let holder = try await rawConnection(database)
        let logger = Logger(label: "test")
        do {
            try await store.updateLoginThrottle(keyHashes: ["hot"]) { _ in ((), ["hot": LoginThrottleRecord(failures: 1, lastFailure: 10)]) }
            try await holder.query("BEGIN", logger: logger)
            try await holder.query("SELECT 1 FROM login_throttle WHERE key_hash = 'hot' FOR UPDATE", logger: logger)
            do {
                try await store.updateLoginThrottle(keyHashes: ["hot"]) { rows in ((), rows) }
                Issue.record("the update went through a row the test holds locked")
            } catch let error as StoreError {
                #expect(error.code == .unavailable)
                #expect(error.message.contains("55P03"), "\(error)")
            }
            try await holder.query("ROLLBACK", logger: logger)
            // Nothing was lost or left locked: the key reads as before and takes an update.
            let seen = try await store.updateLoginThrottle(keyHashes: ["hot"]) { rows in (rows, rows) }
            #expect(seen["hot"] == LoginThrottleRecord(failures: 1, lastFailure: 10))
        } catch {
            try? await holder.close()
            try? await store.close()
            throw error
        }
        try await holder.close()
        try await store.close()
    }

    /// Rows are what the transition leaves: a key it drops is deleted, a key never stored reads as absent (not as
    /// an empty row), and the purge deletes only rows idle since the cutoff.
    @Test func loginThrottleRowsFollowTheTransitionAndIdleOnesArePurged() async throws {
        try await withReplicas(configure: { $0.purgeBatchSize = 2 }) { stores in
            let store = stores[0]
            try await store.updateLoginThrottle(keyHashes: ["old-1", "old-2", "old-3", "fresh"]) { _ in
                ((), [
                    "old-1": LoginThrottleRecord(failures: 1, lastFailure: 10),
                    "old-2": LoginThrottleRecord(failures: 2, lastFailure: 20),
                    "old-3": LoginThrottleRecord(failures: 0, lastFailure: 5, pending: 1, lastReserved: 30),
                    "fresh": LoginThrottleRecord(failures: 1, lastFailure: 10, pending: 1, lastReserved: 900),
                ])
            }
            let absent = try await stores[1].updateLoginThrottle(keyHashes: ["never", "old-1"]) { rows in (Set(rows.keys), rows) }
            #expect(absent == ["old-1"])
            // Dropping a key deletes its row.
            try await stores[1].updateLoginThrottle(keyHashes: ["old-2"]) { _ in ((), [:]) }
            #expect(try await store.updateLoginThrottle(keyHashes: ["old-2"]) { rows in (rows.isEmpty, rows) })
            // old-1 (10) and old-3 (30) are idle before 500; fresh was reserved at 900. Batches of 2.
            #expect(try await stores[1].purgeLoginThrottle(idleBefore: 500) == 2)
            let left = try await store.updateLoginThrottle(keyHashes: ["old-1", "old-3", "fresh"]) { rows in (Set(rows.keys), rows) }
            #expect(left == ["fresh"])
        }
    }
}
