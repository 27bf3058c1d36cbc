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

    private let entries = NIOLockedValueBox([Int64: Entry]())
    let ttl: Int
    let capacity: Int

    init(ttl: Int = 5, capacity: Int = 100_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    func get(_ id: Int64, now: Int) -> TokenRecord? {
        entries.withLockedValue { entries in
            guard let entry = entries[id] else { return nil }
            guard now - entry.cachedAt < ttl else {
                entries[id] = nil
                return nil
            }
            return entry.record
        }
    }

    func put(_ records: [TokenRecord], now: Int) {
        entries.withLockedValue { entries in
            if entries.count + records.count > capacity {
                // Drop stale entries first; if still full, start over (a full sweep is rare and bounded).
                entries = entries.filter { now - $0.value.cachedAt < ttl }
                if entries.count + records.count > capacity { entries.removeAll(keepingCapacity: true) }
            }
            for record in records { entries[record.id] = Entry(record: record, cachedAt: now) }
        }
    }

    func markRevoked(id: Int64) {
        entries.withLockedValue { $0[id]?.record.revoked = true }
    }

    func markFamilyRevoked(_ familyID: String) {
        entries.withLockedValue { entries in
            for (id, entry) in entries where entry.record.familyID == familyID { entries[id]?.record.revoked = true }
        }
    }

    func remove(id: Int64) {
        _ = entries.withLockedValue { $0.removeValue(forKey: id) }
    }
}
