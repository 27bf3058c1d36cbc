import GatehouseTokens
import Testing

@testable import GatehouseAuthServer

/// The per-process cache of verified self-contained JWTs, alone.
@Suite struct SelfContainedTokenCacheTests {
    static func entry(jti: String = "sc.inc.a", revoked: Bool, checkedAt: Int) -> SelfContainedTokenCache.Entry {
        let claims = AccessTokenClaims(
            iss: "https://issuer.test", sub: "svc", aud: ["api"], exp: 10_000, iat: 1000, nbf: 1000, jti: jti, client_id: "svc", scope: nil, auth_time: nil
        )
        return .init(tokenHash: "hash", claims: claims, revoked: revoked, checkedAt: checkedAt)
    }

    /// An introspection that read "not revoked" from the store just before this process revoked the token resumes
    /// after the revocation and puts its answer: it must not reopen the token for another `ttl`.
    @Test func aStaleNotRevokedAnswerDoesNotOverwriteARevocation() {
        let cache = SelfContainedTokenCache(ttl: 5)
        cache.put(Self.entry(revoked: false, checkedAt: 1000), now: 1000)
        let readBeforeTheRevocation = Self.entry(revoked: false, checkedAt: 1006)
        cache.markRevoked(Self.entry(revoked: false, checkedAt: 1000), now: 1006)
        #expect(cache.get("sc.inc.a", tokenHash: "hash", now: 1006)?.revoked == true)

        cache.put(readBeforeTheRevocation, now: 1006)
        let after = cache.get("sc.inc.a", tokenHash: "hash", now: 1006)
        #expect(after?.revoked == true)
        #expect(after.map { cache.isFresh($0, now: 1006) } == true)
        // Another token's entry is unaffected.
        cache.put(Self.entry(jti: "sc.inc.b", revoked: false, checkedAt: 1006), now: 1006)
        #expect(cache.get("sc.inc.b", tokenHash: "hash", now: 1006)?.revoked == false)
    }

    @Test func anEntryAnswersOnlyForTheBytesThatWereVerified() {
        let cache = SelfContainedTokenCache(ttl: 5)
        cache.put(Self.entry(revoked: false, checkedAt: 1000), now: 1000)
        #expect(cache.get("sc.inc.a", tokenHash: "hash", now: 1001) != nil)
        #expect(cache.get("sc.inc.a", tokenHash: "other", now: 1001) == nil)
        #expect(cache.get("sc.inc.a", tokenHash: "hash", now: 10_000) == nil, "past exp the entry is dropped")
    }
}
