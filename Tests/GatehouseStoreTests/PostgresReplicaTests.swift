import GatehouseStore
import GatehouseStorePostgres
import GatehouseTestSupport
import GatehouseTokens
import Logging
import NIOPosix
import PostgresNIO
import Testing

/// Two `PostgresAuthStore`s on one database stand for two authorization-server replicas: what must happen once
/// happens once across them.
@Suite(.postgresServer) struct PostgresReplicaTests {
    /// Opens `count` stores on one fresh database, runs `body`, closes them and drops the database.
    func withReplicas(_ count: Int = 2, configure: (inout PostgresAuthStore.Configuration) -> Void = { _ in }, _ body: ([PostgresAuthStore]) async throws -> Void) async throws {
        let server = try #require(PostgresServer.current)
        let database = try server.createDatabase()
        defer { server.dropDatabase(database) }
        var configuration = server.configuration(database: database)
        configure(&configuration)
        var stores: [PostgresAuthStore] = []
        do {
            for _ in 0..<count { stores.append(try await PostgresAuthStore.open(configuration, logger: Logger(label: "test"))) }
            try await body(stores)
        } catch {
            for store in stores { try? await store.close() }
            throw error
        }
        for store in stores { try await store.close() }
    }

    @Test func fiftyConcurrentRedemptionsOfOneCodeOnTwoReplicasHaveOneWinner() async throws {
        try await withReplicas { stores in
            try await stores[0].insertCode(TestTokens.code())
            let results = try await withThrowingTaskGroup(of: CodeRedemption.self) { group in
                for attempt in 0..<50 {
                    let store = stores[attempt % 2]
                    group.addTask { try await store.redeemCode(hash: "code-hash", at: 100 + attempt, issuing: []) }
                }
                return try await group.reduce(into: [CodeRedemption]()) { $0.append($1) }
            }
            let winners = results.compactMap { if case .redeemed(let code) = $0 { code } else { nil } }
            #expect(winners.count == 1)
            let losers = results.compactMap { if case .alreadyUsed(let code) = $0 { code } else { nil } }
            #expect(losers.count == 49)
            // Every loser saw the winner's mark, not a time of its own.
            #expect(losers.allSatisfy { $0.usedAt == winners.first?.usedAt })
        }
    }

    @Test func concurrentRotationOfOneRefreshTokenOnTwoReplicasHasOneWinner() async throws {
        try await withReplicas { stores in
            try await stores[1].insertTokens([TestTokens.refreshToken("r1", family: "fam")])
            let marks = try await withThrowingTaskGroup(of: RotationMark.self) { group in
                for attempt in 0..<40 {
                    let store = stores[attempt % 2]
                    group.addTask { try await store.markRotated(TestTokens.locator("r1"), at: 500 + attempt) }
                }
                return try await group.reduce(into: [RotationMark]()) { $0.append($1) }
            }
            let winners = marks.compactMap { if case .rotatedNow(let token) = $0 { token } else { nil } }
            #expect(winners.count == 1)
            let before = marks.compactMap { if case .rotatedBefore(let token) = $0 { token } else { nil } }
            #expect(before.count == 39)
            #expect(before.allSatisfy { $0.rotatedAt == winners.first?.rotatedAt })
        }
    }

    @Test func twoServersMigratingAnEmptyDatabaseAtOnceMigrateItOnce() async throws {
        let server = try #require(PostgresServer.current)
        let database = try server.createDatabase()
        defer { server.dropDatabase(database) }
        // Opened without migrating (a ping only), so that both migrations start from the empty database.
        let first = try await PostgresAuthStore.open(server.configuration(database: database), logger: Logger(label: "a"), migrate: false)
        let second = try await PostgresAuthStore.open(server.configuration(database: database), logger: Logger(label: "b"), migrate: false)
        async let a = first.migrate()
        async let b = second.migrate()
        let applied = try await [a, b]
        // One of them applied every migration (4: the schema, the browser sign-in tables, the login throttle, the JWT
        // revocations), the other none.
        #expect(applied.sorted() == [0, 4])
        #expect(try await first.schemaVersion() == 4)
        #expect(try await second.schemaVersion() == 4)
        // And the schema works from both.
        try await first.insertTokens([TestTokens.accessToken("t")])
        #expect(try await second.token(TestTokens.locator("t")) != nil)
        try await first.close()
        try await second.close()
    }

    @Test func tokenIDsFromTwoReplicasNeverCollide() async throws {
        try await withReplicas { stores in
            let batches = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for attempt in 0..<600 {
                    let store = stores[attempt % 2]
                    group.addTask { try await store.allocateTokenIDs(attempt % 3 == 0 ? 2 : 1) }
                }
                return try await group.reduce(into: [[Int64]]()) { $0.append($1) }
            }
            let all = batches.flatMap { $0 }
            #expect(all.count == 800)
            #expect(Set(all).count == all.count)
            #expect(batches.allSatisfy { $0.count < 2 || $0[1] == $0[0] + 1 })
        }
    }

    @Test func aTokenStoredByOneReplicaIsSeenAndRevokedByTheOther() async throws {
        try await withReplicas { stores in
            try await stores[0].insertTokens([TestTokens.accessToken("t", family: "fam"), TestTokens.accessToken("other")])
            #expect(try await stores[1].token(TestTokens.locator("t"))?.revoked == false)
            try await stores[1].revokeFamily("fam")
            #expect(try await stores[0].token(TestTokens.locator("t"))?.revoked == true)
            #expect(try await stores[1].revokeToken(TestTokens.locator("other")))
            #expect(try await stores[0].token(TestTokens.locator("other"))?.revoked == true)
        }
    }

    @Test func concurrentConsentsOnTwoReplicasKeepEveryScope() async throws {
        try await withReplicas { stores in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<20 {
                    let store = stores[index % 2]
                    group.addTask { try await store.saveConsent(userID: "u", clientID: "c", scopes: ["s\(index)"], at: index) }
                }
                try await group.waitForAll()
            }
            #expect(try await stores[0].consentedScopes(userID: "u", clientID: "c") == Set((0..<20).map { "s\($0)" }))
        }
    }

    @Test func purgeDeletesInBatchesUntilNothingExpiredIsLeft() async throws {
        try await withReplicas(1, configure: { $0.purgeBatchSize = 10 }) { stores in
            let store = stores[0]
            let expired = (0..<35).map { TestTokens.accessToken("token-\($0)", expiresAt: 10) }
            let live = (35..<40).map { TestTokens.accessToken("token-\($0)", expiresAt: 5000) }
            try await store.insertTokens(expired + live)
            for index in 0..<12 {
                var code = TestTokens.code("code-\(index)")
                code.expiresAt = 10
                try await store.insertCode(code)
            }
            var fresh = TestTokens.code("fresh")
            fresh.expiresAt = 5000
            try await store.insertCode(fresh)
            // 35 tokens and 12 codes in batches of 10: 4 + 2 statements that delete, each its own transaction.
            #expect(try await store.purgeExpired(now: 3000) == 47)
            #expect(try await store.purgeExpired(now: 3000) == 0)
            #expect(try await store.token(TestTokens.locator("token-0")) == nil)
            #expect(try await store.token(TestTokens.locator("token-39")) != nil)
            #expect(try await store.code(hash: "fresh") != nil)
        }
    }

    /// A rotation whose successors cannot be stored (here: an id already taken; in production the database going
    /// away) is rolled back with them: the token stays unrotated, so the client's retry is a first use, not a
    /// reuse that would revoke its family. A rotation that succeeds stores its successors with the mark.
    @Test func aRotationIsNeverHalfDone() async throws {
        try await withReplicas { stores in
            try await stores[0].insertTokens([TestTokens.refreshToken("r1", family: "fam"), TestTokens.accessToken("taken")])
            let clash = TestTokens.accessToken("taken", family: "fam")  // same id as a stored row: the INSERT fails
            await #expect(throws: StoreError.self) {
                try await stores[0].rotate(TestTokens.locator("r1"), at: 500, successors: [clash])
            }
            #expect(try await stores[1].token(TestTokens.locator("r1"))?.rotatedAt == nil)
            let successor = TestTokens.refreshToken("r2", family: "fam")
            let mark = try await stores[1].rotate(TestTokens.locator("r1"), at: 501, successors: [successor])
            guard case .rotatedNow = mark else { Issue.record("expected rotatedNow, got \(mark)"); return }
            #expect(try await stores[0].token(TestTokens.locator("r2")) == successor)
            // Rotated once: a second rotation stores nothing.
            let again = try await stores[0].rotate(TestTokens.locator("r1"), at: 502, successors: [TestTokens.refreshToken("r3", family: "fam")])
            guard case .rotatedBefore = again else { Issue.record("expected rotatedBefore, got \(again)"); return }
            #expect(try await stores[0].token(TestTokens.locator("r3")) == nil)
        }
    }

    /// A browser session made on one replica is found, replaced (sign-in) and ended on the other; a pending request
    /// is taken exactly once however many replicas race for it; the purge trims each tier to its cap.
    @Test func loginStateCrossesReplicasAndStaysBounded() async throws {
        try await withReplicas(configure: { $0.purgeBatchSize = 7 }) { stores in
            let anonymous = BrowserSessionRecord(idHash: "s1", csrfToken: "csrf-1", expiresAt: 1000)
            try await stores[0].insertSession(anonymous)
            #expect(try await stores[1].session(idHash: "s1", now: 10) == anonymous)
            #expect(try await stores[1].session(idHash: "s1", now: 1000) == nil)  // expired
            let signedIn = BrowserSessionRecord(idHash: "s2", csrfToken: "csrf-2", userID: "u1", username: "alice", authTime: 10, expiresAt: 5000)
            try await stores[1].replaceSession("s1", with: signedIn)
            #expect(try await stores[0].session(idHash: "s1", now: 10) == nil)
            #expect(try await stores[0].session(idHash: "s2", now: 10) == signedIn)

            try await stores[0].insertPendingAuthorization(.init(idHash: "p1", sessionHash: "s1", signedIn: false, expiresAt: 600, payload: "{}"))
            try await stores[1].rebindPendingAuthorization(idHash: "p1", toSessionHash: "s2")
            #expect(try await stores[0].pendingAuthorization(idHash: "p1", now: 10)?.sessionHash == "s2")
            let takes = try await withThrowingTaskGroup(of: Bool.self) { group in
                for attempt in 0..<20 {
                    let store = stores[attempt % 2]
                    group.addTask { try await store.takePendingAuthorization(idHash: "p1") }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(takes.filter { $0 }.count == 1)

            // 30 anonymous sessions (expiring 2000…2029) and 3 more signed in: the purge keeps the newest 10 and 2.
            for index in 0..<30 {
                try await stores[index % 2].insertSession(.init(idHash: "a\(index)", csrfToken: "c", expiresAt: 2000 + index))
            }
            for index in 0..<3 {
                try await stores[0].insertSession(.init(idHash: "u\(index)", csrfToken: "c", userID: "u", username: "alice", authTime: 1, expiresAt: 6000 + index))
            }
            try await stores[0].insertPendingAuthorization(.init(idHash: "p2", sessionHash: "a0", signedIn: false, expiresAt: 100, payload: "{}"))
            let removed = try await stores[1].purgeLoginState(now: 200, maxAnonymousSessions: 10, maxSignedInSessions: 2)
            #expect(removed == 1 + 20 + 2)  // the expired request, then the trims (in batches of 7)
            #expect(try await stores[0].session(idHash: "a19", now: 200) == nil)
            #expect(try await stores[0].session(idHash: "a20", now: 200) != nil)
            #expect(try await stores[0].session(idHash: "u2", now: 200) != nil)
            #expect(try await stores[0].session(idHash: "s2", now: 200) == nil)  // the oldest signed-in one went
            #expect(try await stores[0].deleteSession(idHash: "u2"))
            #expect(try await stores[1].deleteSession(idHash: "u2") == false)
        }
    }
}

/// The database going away and coming back, with its own server (the test stops it).
@Suite(.postgresServer) struct PostgresFaultTests {
    @Test func callsFailPromptlyWhileTheServerIsDownAndSucceedAgainAfterItRestarts() async throws {
        let server = try #require(PostgresServer.current)
        let database = try server.createDatabase()
        defer { server.dropDatabase(database) }
        let configuration = server.configuration(database: database, statementTimeoutMilliseconds: 1000, connectTimeoutMilliseconds: 500)
        let store = try await PostgresAuthStore.open(configuration, logger: Logger(label: "test"))
        do {
            try await store.insertTokens([TestTokens.accessToken("t")])
            try await store.ping()

            try await PostgresServer.offloaded { server.stopProcess(mode: "immediate") }
            let clock = ContinuousClock()
            for _ in 0..<3 {
                let start = clock.now
                await #expect(throws: StoreError(code: .unavailable, message: "")) { _ = try await store.token(TestTokens.locator("t")) }
                await #expect(throws: StoreError(code: .unavailable, message: "")) { try await store.insertTokens([TestTokens.accessToken("after")]) }
                // Bounded by the connect and statement timeouts (1.5 s per call here), never a hang.
                #expect(clock.now - start < .seconds(4))
            }

            try await PostgresServer.offloaded { try server.startProcess() }
            var recovered: TokenRecord?
            _ = await eventually(timeout: .seconds(30), interval: .milliseconds(100)) {
                recovered = try? await store.token(TestTokens.locator("t"))
                return recovered != nil
            }
            // The same store instance, not reopened: the pool reconnected by itself; the token acknowledged
            // before the crash is still there.
            #expect(recovered?.clientID == "c")
            try await store.insertTokens([TestTokens.accessToken("after")])
            #expect(try await store.token(TestTokens.locator("after")) != nil)
        } catch {
            try? await store.close()
            throw error
        }
        try await store.close()
    }
}

/// Opening with a wrong password or database: a clear `openFailed` that names the cause, never the password.
@Suite(.postgresServer) struct PostgresOpenTests {
    @Test func aWrongPasswordIsNamedWithoutBeingEchoed() async throws {
        let server = try #require(PostgresServer.current)
        var configuration = server.configuration(database: "postgres", statementTimeoutMilliseconds: 500, connectTimeoutMilliseconds: 500)
        configuration.password = "wrong-password-xyzzy"
        let error = await #expect(throws: StoreError(code: .openFailed, message: "")) {
            try await PostgresAuthStore.open(configuration, logger: Logger(label: "test"))
        }
        #expect(error?.message.contains("28P01") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("xyzzy") == false)
    }

    @Test func aMissingDatabaseIsNamed() async throws {
        let server = try #require(PostgresServer.current)
        let configuration = server.configuration(database: "no_such_database", statementTimeoutMilliseconds: 500, connectTimeoutMilliseconds: 500)
        let error = await #expect(throws: StoreError(code: .openFailed, message: "")) {
            try await PostgresAuthStore.open(configuration, logger: Logger(label: "test"))
        }
        #expect(error?.message.contains("3D000") == true, "\(error?.message ?? "")")
    }
}
