import GatehouseStore
import NIOConcurrencyHelpers

/// Recently issued or looked-up tokens by row id, so introspection and exchange of a hot token cost no database
/// round trip. Entries are re-read after `ttl` seconds (changes made by another process, such as
/// `gatehouse clients remove`, show within that time); revocations in this process update the cache at once.
final class TokenRecordCache: Sendable {
    private struct Entry {
        var record: TokenRecord
        var cachedAt: Int
    }

    private struct State {
        var entries: [Int64: Entry] = [:]
        /// Families revoked in this process within `ttl`, and when. A family, once revoked, never issues again, but
        /// a request that stored a family's tokens before the revocation may put them here after it (a code's
        /// winning redemption resuming after its replay revoked the family): they go in revoked. Revocations of a
        /// family are rare (a replay, a reused refresh token), so this stays small; `put` pays one `isEmpty` check.
        var revokedFamilies: [String: Int] = [:]
    }

    private let state = NIOLockedValueBox(State())
    let ttl: Int
    let capacity: Int

    init(ttl: Int = 5, capacity: Int = 100_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    func get(_ id: Int64, now: Int) -> TokenRecord? {
        state.withLockedValue { state in
            guard let entry = state.entries[id] else { return nil }
            guard now - entry.cachedAt < ttl else {
                state.entries[id] = nil
                return nil
            }
            return entry.record
        }
    }

    func put(_ records: [TokenRecord], now: Int) {
        state.withLockedValue { state in
            if state.entries.count + records.count > capacity {
                // Drop stale entries first; if still full, start over (a full sweep is rare and bounded).
                state.entries = state.entries.filter { now - $0.value.cachedAt < ttl }
                if state.entries.count + records.count > capacity { state.entries.removeAll(keepingCapacity: true) }
            }
            for var record in records {
                if !state.revokedFamilies.isEmpty, let family = record.familyID, state.revokedFamilies[family] != nil { record.revoked = true }
                state.entries[record.id] = Entry(record: record, cachedAt: now)
            }
        }
    }

    func markRevoked(id: Int64) {
        state.withLockedValue { $0.entries[id]?.record.revoked = true }
    }

    func markFamilyRevoked(_ familyID: String, now: Int) {
        state.withLockedValue { state in
            for (id, entry) in state.entries where entry.record.familyID == familyID { state.entries[id]?.record.revoked = true }
            state.revokedFamilies = state.revokedFamilies.filter { now - $0.value < ttl }
            state.revokedFamilies[familyID] = now
        }
    }

    func remove(id: Int64) {
        _ = state.withLockedValue { $0.entries.removeValue(forKey: id) }
    }
}
