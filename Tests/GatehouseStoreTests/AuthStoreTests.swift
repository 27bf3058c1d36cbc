import GatehouseStore
import GatehouseStorePostgres
import GatehouseTokens
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Test tokens: a stable split token per name (ids from the name's position in `names`).
enum TestTokens {
    static let names = ["dup", "after", "r1", "a1", "other", "plain-token-value", "t", "old", "live", "r", "fa", "fr"] + (0..<500).map { "token-\($0)" } + ["r2", "r3", "taken", "ca", "cr", "ca2", "cr2"] + (0..<20).map { "loser-\($0)" }
    static let tokens: [String: String] = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, TokenLocator.make(id: Int64($0 + 1)).token) })
    static func locator(_ name: String) -> TokenLocator { TokenLocator(token: tokens[name]!)! }

    static func accessToken(_ value: String, family: String? = nil, client: String = "c", expiresAt: Int = 2000) -> TokenRecord {
        let locator = locator(value)
        return TokenRecord(id: locator.id, tokenHash: locator.hash, kind: .access, clientID: client, userID: "u", scope: "a", issuedAt: 1, expiresAt: expiresAt, familyID: family, familyExpiresAt: nil, grantType: "password", authTime: 1)
    }

    static func refreshToken(_ value: String, family: String, familyExpiresAt: Int = 9000) -> TokenRecord {
        let locator = locator(value)
        return TokenRecord(id: locator.id, tokenHash: locator.hash, kind: .refresh, clientID: "c", userID: "u", scope: "a", issuedAt: 1, expiresAt: 2000, familyID: family, familyExpiresAt: familyExpiresAt, grantType: "password", authTime: 1)
    }

    static func code(_ hash: String = "code-hash", family: String = "fam") -> AuthorizationCodeRecord {
        AuthorizationCodeRecord(codeHash: hash, clientID: "c", userID: "u", redirectURI: "https://a/cb", redirectURIWasGiven: true, scope: "a", codeChallenge: nil, authTime: 1, issuedAt: 1, expiresAt: 61, familyID: family)
    }
}

/// The `AuthStore` contract, run against every implementation: SQLite and a real PostgreSQL server.
@Suite(.postgresServer) struct AuthStoreTests {
    func locator(_ name: String) -> TokenLocator { TestTokens.locator(name) }
    func accessToken(_ value: String, family: String? = nil, client: String = "c", expiresAt: Int = 2000) -> TokenRecord {
        TestTokens.accessToken(value, family: family, client: client, expiresAt: expiresAt)
    }

    @Test(arguments: StoreBackend.allCases)
    func concurrentInsertsAreAllDurableAndSurviveReopening(_ backend: StoreBackend) async throws {
        let database = try backend.makeDatabase()
        defer { database.cleanup() }
        let store = try await database.open()
        let values = (0..<500).map { "token-\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for value in values { group.addTask { try await store.insertTokens([TestTokens.accessToken(value)]) } }
            try await group.waitForAll()
        }
        for value in values.shuffled().prefix(50) {
            #expect(try await store.token(locator(value))?.clientID == "c")
        }
        try await store.close()
        let reopened = try await database.open()
        for value in values { #expect(try await reopened.token(locator(value)) != nil) }
        try await reopened.close()
    }

    @Test(arguments: StoreBackend.allCases)
    func aDuplicateInsertFailsOnlyItsBatchNotTheStore(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertTokens([accessToken("dup")])
            await #expect(throws: StoreError(code: .queryFailed, message: "")) { try await store.insertTokens([accessToken("dup")]) }
            try await store.insertTokens([accessToken("after")])
            #expect(try await store.token(locator("after")) != nil)
        }
    }

    /// 20 redemptions of one code at once, each bringing tokens of its own: one wins, and only its tokens are stored.
    @Test(arguments: StoreBackend.allCases)
    func codeRedemptionIsSingleUseUnderConcurrency(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertCode(TestTokens.code())
            let results = try await withThrowingTaskGroup(of: (Int, CodeRedemption).self) { group in
                for attempt in 0..<20 {
                    group.addTask { (attempt, try await store.redeemCode(hash: "code-hash", at: 5, issuing: [accessToken("loser-\(attempt)", family: "fam")])) }
                }
                return try await group.reduce(into: [(Int, CodeRedemption)]()) { $0.append($1) }
            }
            let winners = results.filter { if case .redeemed = $0.1 { true } else { false } }.map(\.0)
            #expect(winners.count == 1)
            #expect(results.filter { if case .alreadyUsed(let code) = $0.1 { code.usedAt == 5 } else { false } }.count == 19)
            for attempt in 0..<20 {
                #expect((try await store.token(locator("loser-\(attempt)")) != nil) == winners.contains(attempt), "attempt \(attempt)")
            }
            #expect(try await store.redeemCode(hash: "nope", at: 5, issuing: [accessToken("ca")]) == .notFound)
            #expect(try await store.token(locator("ca")) == nil)
            #expect(try await store.code(hash: "code-hash")?.usedAt == 5)
        }
    }

    /// A redemption whose tokens cannot be stored (here an id already taken; in production the database going away
    /// between the two writes) is rolled back whole: the code stays unused and none of its tokens is stored, so the
    /// client's retry is a first use — and it succeeds, storing its tokens with the mark.
    @Test(arguments: StoreBackend.allCases)
    func aRedemptionThatFailsLeavesTheCodeUnusedAndStoresNothing(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertCode(TestTokens.code(family: "fam"))
            try await store.insertTokens([accessToken("taken")])
            let clash = [accessToken("ca", family: "fam"), accessToken("taken", family: "fam")]  // the second id is taken
            await #expect(throws: StoreError.self) { try await store.redeemCode(hash: "code-hash", at: 5, issuing: clash) }
            #expect(try await store.code(hash: "code-hash")?.usedAt == nil)
            #expect(try await store.token(locator("ca")) == nil)
            #expect(try await store.token(locator("taken"))?.familyID == nil)  // the row that was there, untouched

            let retry = try await store.redeemCode(hash: "code-hash", at: 6, issuing: [accessToken("ca2", family: "fam"), TestTokens.refreshToken("cr2", family: "fam")])
            guard case .redeemed(let code) = retry else { Issue.record("expected redeemed, got \(retry)"); return }
            #expect(code.usedAt == 6)
            #expect(try await store.token(locator("ca2"))?.familyID == "fam")
            #expect(try await store.token(locator("cr2"))?.kind == .refresh)
        }
    }

    /// A replay revokes what the redemption issued: the replayer saw the code used, so the tokens committed with
    /// the mark are there for the revocation to reach.
    @Test(arguments: StoreBackend.allCases)
    func aReplayIsRecordedAndRevokesTheCodesFamily(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertCode(TestTokens.code(family: "fam"))
            try await store.insertTokens([accessToken("other", family: "fam2")])
            let redeemed = try await store.redeemCode(hash: "code-hash", at: 5, issuing: [accessToken("fa", family: "fam"), TestTokens.refreshToken("fr", family: "fam")])
            guard case .redeemed = redeemed else { Issue.record("expected redeemed, got \(redeemed)"); return }
            #expect(try await store.token(locator("fa"))?.revoked == false)
            guard case .alreadyUsed(let used) = try await store.redeemCode(hash: "code-hash", at: 7, issuing: [accessToken("ca")]) else {
                Issue.record("expected alreadyUsed")
                return
            }
            try await store.recordCodeReplay(hash: "code-hash", familyID: used.familyID, at: 7)
            #expect(try await store.token(locator("fa"))?.revoked == true)
            #expect(try await store.token(locator("fr"))?.revoked == true)
            #expect(try await store.token(locator("other"))?.revoked == false)
            #expect(try await store.token(locator("ca")) == nil)
        }
    }

    /// A rotation whose successors cannot be stored is rolled back with them (on SQLite too: the mark and the
    /// successors are one write transaction), so the retry is a first use; a rotation that succeeds stores them.
    @Test(arguments: StoreBackend.allCases)
    func aRotationIsNeverHalfDone(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertTokens([TestTokens.refreshToken("r1", family: "fam"), accessToken("taken")])
            await #expect(throws: StoreError.self) {
                try await store.rotate(locator("r1"), at: 500, successors: [TestTokens.refreshToken("r2", family: "fam"), accessToken("taken", family: "fam")])
            }
            #expect(try await store.token(locator("r1"))?.rotatedAt == nil)
            #expect(try await store.token(locator("r2")) == nil)
            let mark = try await store.rotate(locator("r1"), at: 501, successors: [TestTokens.refreshToken("r2", family: "fam")])
            guard case .rotatedNow = mark else { Issue.record("expected rotatedNow, got \(mark)"); return }
            #expect(try await store.token(locator("r2"))?.familyID == "fam")
            let again = try await store.rotate(locator("r1"), at: 502, successors: [TestTokens.refreshToken("r3", family: "fam")])
            guard case .rotatedBefore(let before) = again else { Issue.record("expected rotatedBefore, got \(again)"); return }
            #expect(before.rotatedAt == 501)
            #expect(try await store.token(locator("r3")) == nil)
        }
    }

    /// Statements issued while transactions run and fail are never part of them: token inserts acknowledged while
    /// redemptions roll back are all stored. (SQLite has one writer connection: without the writer gate, an insert
    /// issued during another caller's transaction joined it and was rolled back with it after its acknowledgement.)
    @Test(arguments: StoreBackend.allCases)
    func insertsAcknowledgedWhileTransactionsRollBackAreAllKept(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertTokens([accessToken("taken")])
            for index in 0..<20 { try await store.insertCode(TestTokens.code("code-\(index)")) }
            let values = (0..<200).map { "token-\($0)" }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        // Always fails: the second token's id is taken.
                        _ = try? await store.redeemCode(hash: "code-\(index)", at: 5, issuing: [accessToken("loser-\(index)"), accessToken("taken")])
                    }
                }
                for value in values { group.addTask { try await store.insertTokens([accessToken(value)]) } }
                try await group.waitForAll()
            }
            for value in values { #expect(try await store.token(locator(value)) != nil, "\(value) was acknowledged") }
            for index in 0..<20 {
                #expect(try await store.code(hash: "code-\(index)")?.usedAt == nil)
                #expect(try await store.token(locator("loser-\(index)")) == nil)
            }
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func lookupNeedsTheWholeTokenNotJustTheID(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertTokens([accessToken("t")])
            #expect(try await store.token(locator("t")) != nil)
            // Same id, other secret: not found, and it cannot be revoked or rotated by a forger.
            let forged = TokenLocator(id: locator("t").id, hash: SecureToken.hash("forged"))
            #expect(try await store.token(forged) == nil)
            #expect(try await store.revokeToken(forged) == false)
            #expect(try await store.markRotated(forged, at: 1) == .notFound)
            #expect(try await store.token(locator("t"))?.revoked == false)
            #expect(try await store.revokeToken(locator("t")))
            #expect(try await store.token(locator("t"))?.revoked == true)
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func idsAreAllocatedAboveEveryStoredToken(_ backend: StoreBackend) async throws {
        let database = try backend.makeDatabase()
        defer { database.cleanup() }
        let store = try await database.open()
        let first = try await store.allocateTokenIDs(3)
        #expect(first.count == 3 && first == first.sorted() && Set(first).count == 3)
        let next = try await store.allocateTokenIDs(2)
        #expect(next[0] > first[2])
        let (_, locator) = TokenLocator.make(id: next[1])
        try await store.insertTokens([TokenRecord(id: next[1], tokenHash: locator.hash, kind: .access, clientID: "c", userID: nil, scope: "", issuedAt: 0, expiresAt: 10, familyID: nil, familyExpiresAt: nil, grantType: "client_credentials", authTime: nil)])
        try await store.close()
        let reopened = try await database.open()
        let later = try await reopened.allocateTokenIDs(2)
        #expect(later[0] > next[1] && later[1] > later[0])
        try await reopened.close()
    }

    @Test(arguments: StoreBackend.allCases)
    func rotationMarkIsAtomicAndFamilyRevocationReachesAccessTokens(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertTokens([TestTokens.refreshToken("r1", family: "fam"), accessToken("a1", family: "fam"), accessToken("other", family: "fam2")])
            let marks = try await withThrowingTaskGroup(of: RotationMark.self) { group in
                for _ in 0..<10 { group.addTask { try await store.markRotated(TestTokens.locator("r1"), at: 50) } }
                return try await group.reduce(into: [RotationMark]()) { $0.append($1) }
            }
            #expect(marks.filter { if case .rotatedNow = $0 { true } else { false } }.count == 1)
            #expect(marks.filter { if case .rotatedBefore(let t) = $0 { t.rotatedAt == 50 } else { false } }.count == 9)
            try await store.revokeFamily("fam")
            #expect(try await store.token(locator("a1"))?.revoked == true)
            #expect(try await store.token(locator("r1"))?.revoked == true)
            #expect(try await store.token(locator("other"))?.revoked == false)
            if case .revoked = try await store.markRotated(locator("r1"), at: 60) {} else { Issue.record("expected revoked") }
            // An access token is never rotated.
            #expect(try await store.markRotated(locator("other"), at: 60) == .notFound)
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func clientsUsersAndConsents(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            let client = ClientRecord(id: "web", name: "Web", type: "confidential", secretHash: "x", grants: ["authorization_code"], scopes: ["a", "b"], redirectURIs: ["https://a/cb"], fromConfiguration: true, audiences: ["api"], mayIntrospect: true, defaultScopes: ["a"], accessTokenFormat: "jwt")
            try await store.upsertClient(client)
            #expect(try await store.client(id: "web") == client)
            var changed = client
            changed.scopes = ["a"]
            changed.secretHash = nil
            try await store.upsertClient(changed)
            #expect(try await store.client(id: "web") == changed)
            #expect(try await store.listClients() == [changed])
            try await store.upsertUser(UserRecord(id: "u1", username: "alice", passwordHash: "$2b$hash"))
            #expect(try await store.user(username: "alice")?.id == "u1")
            #expect(try await store.user(id: "u1")?.username == "alice")
            try await store.saveConsent(userID: "u1", clientID: "web", scopes: ["a"], at: 1)
            try await store.saveConsent(userID: "u1", clientID: "web", scopes: ["b"], at: 2)
            #expect(try await store.consentedScopes(userID: "u1", clientID: "web") == ["a", "b"])
            #expect(try await store.consentedScopes(userID: "u1", clientID: "other") == [])
            try await store.insertTokens([accessToken("t", client: "web")])
            try await store.removeConfigurationClients(notIn: ["other"])
            #expect(try await store.client(id: "web") == nil)
            #expect(try await store.token(locator("t"))?.revoked == true)
            #expect(try await store.removeUser(username: "alice"))
            #expect(try await store.removeUser(username: "alice") == false)
            #expect(try await store.consentedScopes(userID: "u1", clientID: "web") == [])
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func purgeRemovesExpiredButKeepsLiveFamilies(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.insertTokens([accessToken("old", expiresAt: 10), accessToken("live", expiresAt: 5000), TestTokens.refreshToken("r", family: "f")])
            let removed = try await store.purgeExpired(now: 3000)
            #expect(removed == 1)
            #expect(try await store.token(locator("old")) == nil)
            #expect(try await store.token(locator("live")) != nil)
            // The refresh token expired (2000) but its family lives until 9000: kept, so reuse is still detected.
            #expect(try await store.token(locator("r")) != nil)
        }
    }

    /// More expired rows than one purge batch (1000 by default): the purge repeats its bounded DELETE until none
    /// is left, and the live token stays.
    @Test(arguments: StoreBackend.allCases)
    func purgeDeletesABacklogInBatches(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            func record(_ id: Int64, hash: String, expiresAt: Int) -> TokenRecord {
                TokenRecord(id: id, tokenHash: hash, kind: .access, clientID: "c", userID: nil, scope: "", issuedAt: 1, expiresAt: expiresAt, familyID: nil, familyExpiresAt: nil, grantType: "client_credentials", authTime: nil)
            }
            for _ in 0..<25 {  // 2500 expired rows, 100 per insert (well under both databases' bind limits)
                let ids = try await store.allocateTokenIDs(100)
                try await store.insertTokens(ids.map { record($0, hash: "h\($0)", expiresAt: 10) })
            }
            let live = try await store.allocateTokenIDs(1)[0]
            try await store.insertTokens([record(live, hash: "live", expiresAt: 5000)])
            #expect(try await store.purgeExpired(now: 3000) == 2500)
            #expect(try await store.token(TokenLocator(id: live, hash: "live")) != nil)
            #expect(try await store.purgeExpired(now: 3000) == 0)
        }
    }

    @Test(arguments: StoreBackend.allCases)
    func pingAnswersWhileTheDatabaseIsUp(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await store.ping()
        }
    }

    @Test func onlyHashesReachTheSQLiteFile() async throws {
        let database = try StoreBackend.sqlite.makeDatabase()
        defer { database.cleanup() }
        let path = database.location
        let store = try await database.open()
        try await store.insertTokens([accessToken("plain-token-value")])
        try await store.upsertClient(ClientRecord(id: "c", name: "C", type: "confidential", secretHash: SecureToken.hash("plain-client-secret"), grants: ["client_credentials"], scopes: ["a"], redirectURIs: [], fromConfiguration: false))
        try await store.close()
        // Byte-level check of the database and its WAL: the hashes are there, the raw values are not.
        #expect(system("cat '\(path)'* | grep -q '\(locator("plain-token-value").hash)'") == 0)
        #expect(system("cat '\(path)'* | grep -q '\(TestTokens.tokens["plain-token-value"]!)'") != 0)
        #expect(system("cat '\(path)'* | grep -q plain-client-secret") != 0)
    }
}
