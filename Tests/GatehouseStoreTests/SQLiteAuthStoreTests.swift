import GatehouseStore
import GatehouseTokens
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory per test, removed afterwards.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/gatehouse-store-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    func remove() { _ = system("rm -rf '\(path)'") }
}

@Suite struct SQLiteAuthStoreTests {
    func withStore(_ body: (SQLiteAuthStore, String) async throws -> Void) async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/auth.sqlite"
        let store = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        do {
            try await body(store, path)
        } catch {
            try? await store.close()
            throw error
        }
        try await store.close()
    }

    /// Test tokens: a stable split token per name (ids from the name's position in `names`).
    static let names = ["dup", "after", "r1", "a1", "other", "plain-token-value", "t", "old", "live", "r"] + (0..<500).map { "token-\($0)" }
    static func token(_ name: String) -> String {
        TokenLocator.make(id: Int64(names.firstIndex(of: name)! + 1)).token
    }
    static let tokens: [String: String] = Dictionary(uniqueKeysWithValues: names.map { ($0, token($0)) })
    func locator(_ name: String) -> TokenLocator { TokenLocator(token: Self.tokens[name]!)! }

    func accessToken(_ value: String, family: String? = nil, client: String = "c", expiresAt: Int = 2000) -> TokenRecord {
        let locator = locator(value)
        return TokenRecord(id: locator.id, tokenHash: locator.hash, kind: .access, clientID: client, userID: "u", scope: "a", issuedAt: 1, expiresAt: expiresAt, familyID: family, familyExpiresAt: nil, grantType: "password", authTime: 1)
    }

    func refreshToken(_ value: String, family: String) -> TokenRecord {
        let locator = locator(value)
        return TokenRecord(id: locator.id, tokenHash: locator.hash, kind: .refresh, clientID: "c", userID: "u", scope: "a", issuedAt: 1, expiresAt: 2000, familyID: family, familyExpiresAt: 9000, grantType: "password", authTime: 1)
    }

    @Test func concurrentInsertsAreAllDurableAndSurviveReopening() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/auth.sqlite"
        let store = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        let values = (0..<500).map { "token-\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for value in values { group.addTask { try await store.insertTokens([accessToken(value)]) } }
            try await group.waitForAll()
        }
        for value in values.shuffled().prefix(50) {
            #expect(try await store.token(locator(value))?.clientID == "c")
        }
        try await store.close()
        let reopened = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        for value in values { #expect(try await reopened.token(locator(value)) != nil) }
        try await reopened.close()
    }

    @Test func aDuplicateInsertFailsOnlyItsBatchNotTheStore() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([accessToken("dup")])
            await #expect(throws: StoreError.self) { try await store.insertTokens([accessToken("dup")]) }
            try await store.insertTokens([accessToken("after")])
            #expect(try await store.token(locator("after")) != nil)
        }
    }

    @Test func codeRedemptionIsSingleUseUnderConcurrency() async throws {
        try await withStore { store, _ in
            let code = AuthorizationCodeRecord(codeHash: "code-hash", clientID: "c", userID: "u", redirectURI: "https://a/cb", redirectURIWasGiven: true, scope: "a", codeChallenge: nil, authTime: 1, issuedAt: 1, expiresAt: 61, familyID: "fam")
            try await store.insertCode(code)
            let results = try await withThrowingTaskGroup(of: CodeRedemption.self) { group in
                for _ in 0..<20 { group.addTask { try await store.redeemCode(hash: "code-hash", at: 5) } }
                return try await group.reduce(into: [CodeRedemption]()) { $0.append($1) }
            }
            let redeemed = results.filter { if case .redeemed = $0 { true } else { false } }
            #expect(redeemed.count == 1)
            #expect(results.filter { if case .alreadyUsed = $0 { true } else { false } }.count == 19)
            #expect(try await store.redeemCode(hash: "nope", at: 5) == .notFound)
        }
    }

    @Test func lookupNeedsTheWholeTokenNotJustTheID() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([accessToken("t")])
            #expect(try await store.token(locator("t")) != nil)
            // Same id, other secret: not found, and it cannot be revoked or rotated by a forger.
            let forged = TokenLocator(id: locator("t").id, hash: SecureToken.hash("forged"))
            #expect(try await store.token(forged) == nil)
            #expect(try await store.revokeToken(forged) == false)
            #expect(try await store.markRotated(forged, at: 1) == .notFound)
            #expect(try await store.token(locator("t"))?.revoked == false)
        }
    }

    @Test func idsAreAllocatedAboveEveryStoredToken() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/auth.sqlite"
        let store = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        let first = store.allocateTokenIDs(3)
        #expect(first == [1, 2, 3])
        let (_, locator) = TokenLocator.make(id: 3)
        try await store.insertTokens([TokenRecord(id: 3, tokenHash: locator.hash, kind: .access, clientID: "c", userID: nil, scope: "", issuedAt: 0, expiresAt: 10, familyID: nil, familyExpiresAt: nil, grantType: "client_credentials", authTime: nil)])
        try await store.close()
        let reopened = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        #expect(reopened.allocateTokenIDs(2) == [4, 5])
        try await reopened.close()
    }

    @Test func rotationMarkIsAtomicAndFamilyRevocationReachesAccessTokens() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([refreshToken("r1", family: "fam"), accessToken("a1", family: "fam"), accessToken("other", family: "fam2")])
            let marks = try await withThrowingTaskGroup(of: RotationMark.self) { group in
                for _ in 0..<10 { group.addTask { try await store.markRotated(locator("r1"), at: 50) } }
                return try await group.reduce(into: [RotationMark]()) { $0.append($1) }
            }
            #expect(marks.filter { if case .rotatedNow = $0 { true } else { false } }.count == 1)
            #expect(marks.allSatisfy { if case .rotatedBefore(let t) = $0 { t.rotatedAt == 50 } else { true } })
            try await store.revokeFamily("fam")
            #expect(try await store.token(locator("a1"))?.revoked == true)
            #expect(try await store.token(locator("r1"))?.revoked == true)
            #expect(try await store.token(locator("other"))?.revoked == false)
            if case .revoked = try await store.markRotated(locator("r1"), at: 60) {} else { Issue.record("expected revoked") }
        }
    }

    @Test func onlyHashesReachTheDatabaseFile() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/auth.sqlite"
        let store = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        try await store.insertTokens([accessToken("plain-token-value")])
        try await store.upsertClient(ClientRecord(id: "c", name: "C", type: "confidential", secretHash: SecureToken.hash("plain-client-secret"), grants: ["client_credentials"], scopes: ["a"], redirectURIs: [], fromConfiguration: false))
        try await store.close()
        // Byte-level check of the database and its WAL: the hashes are there, the raw values are not.
        #expect(system("cat '\(path)'* | grep -q '\(locator("plain-token-value").hash)'") == 0)
        #expect(system("cat '\(path)'* | grep -q '\(Self.tokens["plain-token-value"]!)'") != 0)
        #expect(system("cat '\(path)'* | grep -q plain-client-secret") != 0)
    }

    @Test func clientsUsersAndConsents() async throws {
        try await withStore { store, _ in
            let client = ClientRecord(id: "web", name: "Web", type: "confidential", secretHash: "x", grants: ["authorization_code"], scopes: ["a", "b"], redirectURIs: ["https://a/cb"], fromConfiguration: true)
            try await store.upsertClient(client)
            #expect(try await store.client(id: "web") == client)
            try await store.upsertUser(UserRecord(id: "u1", username: "alice", passwordHash: "$2b$hash"))
            #expect(try await store.user(username: "alice")?.id == "u1")
            try await store.saveConsent(userID: "u1", clientID: "web", scopes: ["a"], at: 1)
            try await store.saveConsent(userID: "u1", clientID: "web", scopes: ["b"], at: 2)
            #expect(try await store.consentedScopes(userID: "u1", clientID: "web") == ["a", "b"])
            try await store.insertTokens([accessToken("t", client: "web")])
            try await store.removeConfigurationClients(notIn: ["other"])
            #expect(try await store.client(id: "web") == nil)
            #expect(try await store.token(locator("t"))?.revoked == true)
            #expect(try await store.removeUser(username: "alice"))
            #expect(try await store.removeUser(username: "alice") == false)
        }
    }

    @Test func purgeRemovesExpiredButKeepsLiveFamilies() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([accessToken("old", expiresAt: 10), accessToken("live", expiresAt: 5000), refreshToken("r", family: "f")])
            let removed = try await store.purgeExpired(now: 3000)
            #expect(removed == 1)
            #expect(try await store.token(locator("old")) == nil)
            #expect(try await store.token(locator("live")) != nil)
            // The refresh token expired (2000) but its family lives until 9000: kept, so reuse is still detected.
            #expect(try await store.token(locator("r")) != nil)
        }
    }
}
