import GatehouseTokens
import NIOConcurrencyHelpers

/// Self-contained JWTs this process verified (or issued), by `jti`: their claims, so that a hot token's signature
/// is verified once (an ES256 verification is ~100 µs, several times a cached introspection), and whether it was
/// revoked, as last read from the store. The revocation status is re-read after `ttl` seconds, as
/// `TokenRecordCache` re-reads rows: a revocation at another replica shows here within `ttl`; one made in this
/// process shows at once (`markRevoked`).
final class SelfContainedTokenCache: Sendable {
    struct Entry: Sendable {
        /// SHA-256 of the whole JWT: an entry answers only for the exact bytes that were verified.
        var tokenHash: String
        var claims: AccessTokenClaims
        var revoked: Bool
        /// When `revoked` was read from the store (or set here).
        var checkedAt: Int
    }

    private let entries = NIOLockedValueBox([String: Entry]())
    let ttl: Int
    let capacity: Int

    init(ttl: Int = 5, capacity: Int = 100_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    /// The entry for `jti` if its hash matches `tokenHash` (constant time); its `checkedAt` tells whether the
    /// revocation status is fresh. Entries past their token's expiry are dropped.
    func get(_ jti: String, tokenHash: String, now: Int) -> Entry? {
        entries.withLockedValue { entries in
            guard let entry = entries[jti] else { return nil }
            guard now < entry.claims.exp else {
                entries[jti] = nil
                return nil
            }
            return SecureToken.constantTimeEquals(entry.tokenHash, tokenHash) ? entry : nil
        }
    }

    func isFresh(_ entry: Entry, now: Int) -> Bool { now - entry.checkedAt < ttl }

    func put(_ entry: Entry, now: Int) {
        entries.withLockedValue { entries in
            if entries.count >= capacity {
                // Drop entries whose revocation status is stale first (as `TokenRecordCache` does: at 10,000 issues/s
                // the fresh ones are at most 50,000); if still full, start over (a full sweep is rare and bounded).
                entries = entries.filter { now - $0.value.checkedAt < ttl }
                if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            }
            var entry = entry
            // Revocation is one-way: an introspection that read "not revoked" just before this process revoked the
            // token must not put its stale answer over the revocation (it would read active for another `ttl`).
            if entries[entry.claims.jti]?.revoked == true { entry.revoked = true }
            entries[entry.claims.jti] = entry
        }
    }

    /// Records a revocation made by this process (after the store has it): answered at once here.
    func markRevoked(_ entry: Entry, now: Int) {
        var revoked = entry
        revoked.revoked = true
        revoked.checkedAt = now
        put(revoked, now: now)
    }
}
