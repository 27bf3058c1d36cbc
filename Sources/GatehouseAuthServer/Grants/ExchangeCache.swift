import GatehouseTokens
import NIOConcurrencyHelpers

/// JWTs recently minted by token exchange, reused for the same subject token, caller, scope and audience for up
/// to `reuseFor` seconds. Gateways (several replicas, each with its own cache) ask for the same hot token again and
/// again; re-signing each time would make the signature the authorization server's bottleneck.
///
/// Reuse never outlives what it stands for: the subject token is checked for activity on every call before the
/// cache is consulted (so revocation still applies at once), and an entry is only reused while at least
/// `minimumRemaining` seconds of the JWT's life are left.
final class ExchangeCache: Sendable {
    struct Key: Hashable, Sendable {
        /// The subject token's row id, or a self-contained JWT's `jti`.
        var token: String
        var caller: String
        var scope: String
        var audience: String?
    }

    struct Entry: Sendable {
        var jwt: String
        var exp: Int
        var tokenHash: String
        var mintedAt: Int
    }

    private let entries = NIOLockedValueBox([Key: Entry]())
    let reuseFor: Int
    let minimumRemaining: Int
    let capacity: Int

    init(reuseFor: Int = 30, minimumRemaining: Int = 60, capacity: Int = 50_000) {
        self.reuseFor = reuseFor
        self.minimumRemaining = minimumRemaining
        self.capacity = capacity
    }

    func get(_ key: Key, tokenHash: String, now: Int) -> Entry? {
        entries.withLockedValue { entries in
            guard let entry = entries[key] else { return nil }
            guard now - entry.mintedAt < reuseFor, entry.exp - now >= minimumRemaining, entry.tokenHash == tokenHash else {
                entries[key] = nil
                return nil
            }
            return entry
        }
    }

    func put(_ key: Key, _ entry: Entry) {
        guard reuseFor > 0 else { return }
        entries.withLockedValue { entries in
            if entries.count >= capacity {
                entries = entries.filter { entry.mintedAt - $0.value.mintedAt < reuseFor }
                if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[key] = entry
        }
    }
}
