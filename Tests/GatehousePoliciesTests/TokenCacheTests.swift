import Testing

@testable import GatehousePolicies

@Suite struct TokenCacheTests {
    func key(_ byte: UInt8) -> TokenKey { TokenKey(digest: [UInt8](repeating: byte, count: 32)) }

    @Test func keysFromMemoryEqualKeysFromBytes() {
        let digest = (0..<32).map { UInt8($0 * 7 + 1) }
        let fromMemory = digest.withUnsafeBytes { TokenKey(digestBytes: $0) }
        #expect(fromMemory == TokenKey(digest: digest))
        #expect(fromMemory.words.0 == 0x0108_0F16_1D24_2B32)  // big-endian, as the byte-wise initializer reads it
        var other = digest
        other[31] ^= 1
        #expect(other.withUnsafeBytes { TokenKey(digestBytes: $0) } != fromMemory)
    }

    /// Runs a miss through to completion and returns what later lookups see.
    func fill(_ cache: inout TokenCache<String>, _ key: TokenKey, _ result: TokenCache<String>.FetchResult, now: Double) {
        guard case .fetch(let waiter) = cache.lookup(key, now: now) else {
            Issue.record("expected a fetch")
            return
        }
        #expect(cache.complete(key, result: result, now: now) == [waiter])
    }

    @Test func activeResultsLiveUntilTheJWTExpiresOrTheMaximum() {
        var cache = TokenCache<String>(configuration: .init(maxTTL: 30))
        fill(&cache, key(1), .active("jwt-1", expiresAt: 1010), now: 1000)  // exp sooner than the maximum
        fill(&cache, key(2), .active("jwt-2", expiresAt: 9999), now: 1000)  // the maximum is sooner
        guard case .active("jwt-1", let until) = cache.lookup(key(1), now: 1009.9) else { Issue.record("hit expected"); return }
        #expect(until == 1010)
        guard case .fetch = cache.lookup(key(1), now: 1010) else { Issue.record("expired: fetch expected"); return }
        guard case .active("jwt-2", let until2) = cache.lookup(key(2), now: 1029.9) else { Issue.record("hit expected"); return }
        #expect(until2 == 1030)
        guard case .fetch = cache.lookup(key(2), now: 1030) else { Issue.record("past maxTTL: fetch expected (revocation bound)"); return }
        #expect(cache.statistics.hits == 2)
        #expect(cache.statistics.expirations == 2)
    }

    @Test func alreadyExpiredResultsAreNotCached() {
        var cache = TokenCache<String>()
        fill(&cache, key(1), .active("jwt", expiresAt: 999), now: 1000)
        #expect(cache.count == 0)
    }

    @Test func inactiveResultsAreCachedBriefly() {
        var cache = TokenCache<String>(configuration: .init(negativeTTL: 5))
        fill(&cache, key(9), .inactive, now: 100)
        for time in [100.0, 102, 104.9] {
            guard case .inactive = cache.lookup(key(9), now: time) else { Issue.record("negative hit expected at \(time)"); return }
        }
        #expect(cache.statistics.negativeHits == 3)
        guard case .fetch = cache.lookup(key(9), now: 105) else { Issue.record("negative entry should expire"); return }
    }

    @Test func concurrentMissesShareOneFetch() {
        var cache = TokenCache<String>()
        guard case .fetch(let first) = cache.lookup(key(3), now: 0) else { Issue.record("fetch expected"); return }
        var waiters = [first]
        for _ in 0..<999 {
            guard case .wait(let waiter) = cache.lookup(key(3), now: 0) else { Issue.record("wait expected"); return }
            waiters.append(waiter)
        }
        #expect(cache.statistics.misses == 1)
        #expect(cache.statistics.coalesced == 999)
        let resumed = cache.complete(key(3), result: .active("jwt", expiresAt: 100), now: 0)
        #expect(resumed == waiters)
        guard case .active("jwt", _) = cache.lookup(key(3), now: 1) else { Issue.record("hit expected"); return }
    }

    @Test func failedFetchesCacheNothingAndReleaseWaiters() {
        var cache = TokenCache<String>()
        guard case .fetch(let first) = cache.lookup(key(4), now: 0), case .wait(let second) = cache.lookup(key(4), now: 0) else {
            Issue.record("fetch then wait expected")
            return
        }
        #expect(cache.complete(key(4), result: .failed, now: 0) == [first, second])
        #expect(cache.count == 0)
        guard case .fetch = cache.lookup(key(4), now: 0) else { Issue.record("a new fetch expected after a failure"); return }
    }

    @Test func leastRecentlyUsedEntriesAreEvicted() {
        var cache = TokenCache<String>(configuration: .init(capacity: 3))
        for byte in UInt8(1)...3 { fill(&cache, key(byte), .active("jwt-\(byte)", expiresAt: 100), now: 0) }
        _ = cache.lookup(key(1), now: 1)  // 1 is now the most recently used; 2 is the least
        fill(&cache, key(4), .active("jwt-4", expiresAt: 100), now: 1)
        #expect(cache.count == 3)
        #expect(cache.statistics.evictions == 1)
        guard case .fetch = cache.lookup(key(2), now: 2) else { Issue.record("2 should have been evicted"); return }
        for byte: UInt8 in [1, 3, 4] {
            guard case .active = cache.lookup(key(byte), now: 2) else { Issue.record("\(byte) should still be cached"); return }
        }
    }

    @Test func evictionKeepsTheListConsistentUnderChurn() {
        var cache = TokenCache<Int>(configuration: .init(capacity: 100))
        var generator = SystemRandomNumberGenerator()
        for round in 0..<5000 {
            let byte = UInt8(truncatingIfNeeded: generator.next() % 250)
            switch cache.lookup(key(byte), now: Double(round)) {
            case .fetch: _ = cache.complete(key(byte), result: .active(round, expiresAt: Double(round + 50)), now: Double(round))
            case .wait: Issue.record("no concurrent fetches in this test")
            case .active, .inactive: break
            }
            #expect(cache.count <= 100)
        }
        #expect(cache.statistics.evictions + cache.statistics.expirations > 0)
    }

    @Test func invalidateForgets() {
        var cache = TokenCache<String>()
        fill(&cache, key(5), .active("jwt", expiresAt: 100), now: 0)
        cache.invalidate(key(5))
        guard case .fetch = cache.lookup(key(5), now: 1) else { Issue.record("fetch expected"); return }
    }

    @Test func keysCompareByDigest() {
        #expect(key(1) == key(1))
        #expect(key(1) != key(2))
        var digest = [UInt8](repeating: 0, count: 32)
        digest[31] = 1
        #expect(TokenKey(digest: digest) != key(0))
    }
}
