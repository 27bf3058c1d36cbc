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

    func accessToken(_ value: String, family: String? = nil, client: String = "c", expiresAt: Int = 2000) -> TokenRecord {
        TokenRecord(tokenHash: SecureToken.hash(value), kind: .access, clientID: client, userID: "u", scope: "a", issuedAt: 1, expiresAt: expiresAt, familyID: family, familyExpiresAt: nil, grantType: "password", authTime: 1)
    }

    func refreshToken(_ value: String, family: String) -> TokenRecord {
        TokenRecord(tokenHash: SecureToken.hash(value), kind: .refresh, clientID: "c", userID: "u", scope: "a", issuedAt: 1, expiresAt: 2000, familyID: family, familyExpiresAt: 9000, grantType: "password", authTime: 1)
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
            #expect(try await store.token(hash: SecureToken.hash(value))?.clientID == "c")
        }
        try await store.close()
        let reopened = try await SQLiteAuthStore.open(.init(path: path), logger: Logger(label: "test"))
        for value in values { #expect(try await reopened.token(hash: SecureToken.hash(value)) != nil) }
        try await reopened.close()
    }

    @Test func aDuplicateInsertFailsOnlyItsBatchNotTheStore() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([accessToken("dup")])
            await #expect(throws: StoreError.self) { try await store.insertTokens([accessToken("dup")]) }
            try await store.insertTokens([accessToken("after")])
            #expect(try await store.token(hash: SecureToken.hash("after")) != nil)
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

    @Test func rotationMarkIsAtomicAndFamilyRevocationReachesAccessTokens() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([refreshToken("r1", family: "fam"), accessToken("a1", family: "fam"), accessToken("other", family: "fam2")])
            let marks = try await withThrowingTaskGroup(of: RotationMark.self) { group in
                for _ in 0..<10 { group.addTask { try await store.markRotated(hash: SecureToken.hash("r1"), at: 50) } }
                return try await group.reduce(into: [RotationMark]()) { $0.append($1) }
            }
            #expect(marks.filter { if case .rotatedNow = $0 { true } else { false } }.count == 1)
            #expect(marks.allSatisfy { if case .rotatedBefore(let t) = $0 { t.rotatedAt == 50 } else { true } })
            try await store.revokeFamily("fam")
            #expect(try await store.token(hash: SecureToken.hash("a1"))?.revoked == true)
            #expect(try await store.token(hash: SecureToken.hash("r1"))?.revoked == true)
            #expect(try await store.token(hash: SecureToken.hash("other"))?.revoked == false)
            if case .revoked = try await store.markRotated(hash: SecureToken.hash("r1"), at: 60) {} else { Issue.record("expected revoked") }
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
        #expect(system("cat '\(path)'* | grep -q '\(SecureToken.hash("plain-token-value"))'") == 0)
        #expect(system("cat '\(path)'* | grep -q plain-token-value") != 0)
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
            #expect(try await store.token(hash: SecureToken.hash("t"))?.revoked == true)
            #expect(try await store.removeUser(username: "alice"))
            #expect(try await store.removeUser(username: "alice") == false)
        }
    }

    @Test func purgeRemovesExpiredButKeepsLiveFamilies() async throws {
        try await withStore { store, _ in
            try await store.insertTokens([accessToken("old", expiresAt: 10), accessToken("live", expiresAt: 5000), refreshToken("r", family: "f")])
            let removed = try await store.purgeExpired(now: 3000)
            #expect(removed == 1)
            #expect(try await store.token(hash: SecureToken.hash("old")) == nil)
            #expect(try await store.token(hash: SecureToken.hash("live")) != nil)
            // The refresh token expired (2000) but its family lives until 9000: kept, so reuse is still detected.
            #expect(try await store.token(hash: SecureToken.hash("r")) != nil)
        }
    }
}
