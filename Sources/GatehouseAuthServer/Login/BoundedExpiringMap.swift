/// A map of entries that all live the same time, so that the order of insertion is the order of expiry: a
/// dictionary and a queue of its keys. At capacity an insertion drops the oldest entry, and a purge drops the
/// expired ones from the front of the queue: O(1) amortized per insertion, where the map it replaced scanned every
/// entry under the lock for each insertion past its cap.
struct BoundedExpiringMap<Value> {
    private typealias Slot = (value: Value, expiresAt: Int)

    private var slots: [String: Slot] = [:]
    /// Keys in insertion order from `head`, with their expiry; an item whose key was removed (or replaced with
    /// another expiry) since is stale and skipped.
    private var order: [(key: String, expiresAt: Int)] = []
    private var head = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    var count: Int { slots.count }

    /// The live value, or nil (an expired entry is dropped).
    mutating func value(_ key: String, now: Int) -> Value? {
        guard let slot = slots[key] else { return nil }
        guard slot.expiresAt > now else {
            slots[key] = nil
            return nil
        }
        return slot.value
    }

    func contains(_ key: String) -> Bool { slots[key] != nil }

    /// Inserts, dropping the oldest entries while at capacity.
    mutating func insert(_ key: String, _ value: Value, expiresAt: Int) {
        if slots[key] == nil {
            while slots.count >= capacity, dropOldest() {}
        }
        slots[key] = (value, expiresAt)
        order.append((key, expiresAt))
        compact()
    }

    /// Changes a value in place (its expiry stays).
    mutating func update(_ key: String, _ change: (inout Value) -> Void) {
        guard var slot = slots[key] else { return }
        change(&slot.value)
        slots[key] = slot
    }

    @discardableResult
    mutating func remove(_ key: String) -> Value? {
        slots.removeValue(forKey: key)?.value
    }

    /// Drops every entry expired at `now`: they are all at the front of the queue.
    mutating func purge(now: Int) {
        while head < order.count, order[head].expiresAt <= now {
            let (key, expiresAt) = order[head]
            if slots[key]?.expiresAt == expiresAt { slots[key] = nil }
            head += 1
        }
        compact()
    }

    private mutating func dropOldest() -> Bool {
        while head < order.count {
            let (key, expiresAt) = order[head]
            head += 1
            if slots[key]?.expiresAt == expiresAt {
                slots[key] = nil
                return true
            }
        }
        return false
    }

    /// Frees the consumed front of the queue once it is most of it, and rebuilds the queue when removals have
    /// left it more than twice the entries it stands for (each rebuild is paid for by that many removals).
    private mutating func compact() {
        if head > 1024 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
        if order.count - head > 2 * capacity + 1024 {
            order = slots.map { (key: $0.key, expiresAt: $0.value.expiresAt) }.sorted { $0.expiresAt < $1.expiresAt }
            head = 0
        }
    }
}

extension BoundedExpiringMap: Sendable where Value: Sendable {}
