import GatehouseStore
import Testing

/// What the store keeps for self-contained JWTs (which have no `tokens` row): the revocation list by `jti`, and the
/// client incarnation their `jti` names. Run against SQLite and a real PostgreSQL server.
@Suite(.postgresServer) struct JWTRevocationStoreTests {
    @Test(arguments: StoreBackend.allCases)
    func aRevokedJTIIsListedOnceUntilThePurgeAfterItsExpiry(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, database in
            #expect(try await store.tokenCounts() == StoredTokenCounts(tokens: 0, jwtRevocations: 0))
            #expect(try await store.isJWTRevoked(jti: "sc.inc.a") == false)
            try await store.revokeJWT(jti: "sc.inc.a", clientID: "c", expiresAt: 2000)
            try await store.revokeJWT(jti: "sc.inc.a", clientID: "c", expiresAt: 2000)  // idempotent: no error, one row
            try await store.revokeJWT(jti: "sc.inc.b", clientID: "c", expiresAt: 5000)
            #expect(try await store.isJWTRevoked(jti: "sc.inc.a"))
            #expect(try await store.isJWTRevoked(jti: "sc.inc.b"))
            #expect(try await store.isJWTRevoked(jti: "sc.inc.c") == false)
            #expect(try await store.tokenCounts() == StoredTokenCounts(tokens: 0, jwtRevocations: 2))

            // Durable: another connection (a reopened store, a replica) sees it.
            let other = try await database.open()
            #expect(try await other.isJWTRevoked(jti: "sc.inc.a"))
            try await other.close()

            // Kept while the token could still be presented, and for `jwtRevocationRetention` s past its expiry (a
            // replica whose clock is behind still accepts it until its own `exp`); gone after that.
            #expect(try await store.purgeExpired(now: 1999) == 0)
            #expect(try await store.purgeExpired(now: 2001) == 0)
            #expect(try await store.purgeExpired(now: 2000 + jwtRevocationRetention) == 0)
            #expect(try await store.isJWTRevoked(jti: "sc.inc.a"))
            #expect(try await store.purgeExpired(now: 2001 + jwtRevocationRetention) == 1)
            #expect(try await store.isJWTRevoked(jti: "sc.inc.a") == false)
            #expect(try await store.purgeExpired(now: 3000) == 0)
            #expect(try await store.isJWTRevoked(jti: "sc.inc.b"))
            #expect(try await store.tokenCounts().jwtRevocations == 1)
        }
    }

    /// More expired revocations than one purge batch: the purge repeats its bounded DELETE until none is left.
    @Test(arguments: StoreBackend.allCases)
    func thePurgeDeletesRevocationsInBatches(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<1200 { group.addTask { try await store.revokeJWT(jti: "sc.i.\(index)", clientID: "c", expiresAt: 10) } }
                try await group.waitForAll()
            }
            try await store.revokeJWT(jti: "sc.i.live", clientID: "c", expiresAt: 5000)
            #expect(try await store.tokenCounts().jwtRevocations == 1201)
            #expect(try await store.purgeExpired(now: 3000) == 1200)
            #expect(try await store.purgeExpired(now: 3000) == 0)
            #expect(try await store.isJWTRevoked(jti: "sc.i.live"))
        }
    }

    /// An update keeps a client's incarnation (a restart re-registers configured clients: their tokens must live
    /// on); removing the id and registering it again gives a new one (the old tokens must not come back).
    @Test(arguments: StoreBackend.allCases)
    func aClientKeepsItsIncarnationUntilItIsRemoved(_ backend: StoreBackend) async throws {
        try await StoreDatabase.with(backend) { store, _ in
            let client = ClientRecord(id: "svc", name: "Svc", type: "confidential", secretHash: "x", grants: ["client_credentials"], scopes: ["a"], redirectURIs: [], fromConfiguration: true, accessTokenFormat: "jwt")
            try await store.upsertClient(client)
            let first = try #require(try await store.client(id: "svc")?.incarnation)
            #expect(first == client.incarnation && !first.isEmpty && !first.contains("."))
            var updated = ClientRecord(id: "svc", name: "Renamed", type: "confidential", secretHash: "y", grants: ["client_credentials"], scopes: ["a"], redirectURIs: [], fromConfiguration: true, accessTokenFormat: "jwt")
            #expect(updated.incarnation != first)  // a record built anew carries a new value; the store keeps the old
            try await store.upsertClient(updated)
            #expect(try await store.client(id: "svc")?.incarnation == first)
            #expect(try await store.client(id: "svc")?.name == "Renamed")
            #expect(try await store.removeClient(id: "svc"))
            updated.incarnation = ClientRecord.newIncarnation()
            try await store.upsertClient(updated)
            let second = try #require(try await store.client(id: "svc")?.incarnation)
            #expect(second == updated.incarnation && second != first)
        }
    }
}
