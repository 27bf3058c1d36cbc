import Synchronization

/// A rate limit applied per key (client id, subject, IP, …): GCRA (see `GCRA`) over a bounded, sharded table of
/// theoretical arrival times, shared by every event loop.
///
/// **Concurrency: sharded locks, not per-loop state.** Keys are spread by hash over up to 64 shards, each a `Mutex`
/// around its own table; a decision holds one shard's lock for one dictionary probe and the arithmetic, so two
/// loops deciding for the same key are serialized and the limit is exact (no read-then-increment overshoot), while
/// loops deciding for different keys rarely meet. Per-loop state would need a merge to be exact; a lock-free word per
/// key would still need a concurrent map to find the word. Measured with `scripts/bench-policies.sh` (README,
/// "Rate limits, breakers, admission: the model"): the lock is a small part of a decision, most of it is hashing
/// the key.
///
/// **Bounded memory.** At most `maxKeys` keys are kept (split evenly over the shards). A key whose bucket is full
/// again (TAT ≤ now) is the same as an absent key, so it can be dropped at no loss: new keys reclaim such slots
/// first as the shard's CLOCK hand passes them, and `purge(now:)` drops them all. When a shard is full of live keys,
/// the hand evicts one not used since its last pass (second chance: an approximation of least recently used). That
/// costs accuracy only for the evicted key, which gets a fresh bucket when it returns — at most `burst` requests
/// more than the limit, counted in `RateLimitStats.evictedLive`.
public final class RateLimiter: Sendable {
    /// The rule this limiter applies.
    public let rule: RateLimitRule
    /// Most keys kept at once.
    public let maxKeys: Int
    /// A key unseen this long may be dropped. Default: the rule's fill time (exact: the bucket is full by then). A
    /// shorter expiry drops keys whose bucket is not yet full (they come back with a full one).
    public let idleExpiry: UInt64

    private let gcra: GCRA
    private let shards: [RateLimitShardBox]
    private let shardMask: Int

    /// - Parameters:
    ///   - rule: the limit.
    ///   - maxKeys: most keys tracked at once (at least 1); default 100,000.
    ///   - idleExpiry: how long an unseen key is kept; default (nil) the time to refill the whole bucket.
    public convenience init(rule: RateLimitRule, maxKeys: Int = 100_000, idleExpiry: UInt64? = nil) {
        self.init(rule: rule, maxKeys: maxKeys, idleExpiry: idleExpiry, shardCount: 64)
    }

    /// - Parameter shardCount: at most this many shards (rounded down to a power of two, and no more than keys);
    ///   tests use 1 to see the eviction order without the hash's spread.
    init(rule: RateLimitRule, maxKeys: Int, idleExpiry: UInt64? = nil, shardCount: Int) {
        let keyLimit = max(1, maxKeys)
        self.rule = rule
        self.maxKeys = keyLimit
        self.idleExpiry = idleExpiry ?? rule.fillTime
        gcra = GCRA(rule: rule)
        // A power of two up to 64, and no more shards than keys (each shard holds at least one).
        var count = 1
        while count * 2 <= min(shardCount, keyLimit) { count *= 2 }
        shardMask = count - 1
        let fill = UInt128(rule.burst) * UInt128(rule.unit)
        let idle = UInt128(idleExpiry ?? rule.fillTime) * UInt128(rule.rate)
        shards = (0..<count).map { index in
            let capacity = keyLimit / count + (index < keyLimit % count ? 1 : 0)
            return RateLimitShardBox(RateLimitShard(capacity: capacity, fillTicks: fill, idleTicks: idle))
        }
    }

    /// Decides one request of `key` at `now` (ns, monotonic) and counts it when allowed or delayed.
    ///
    /// The key is a `String` rather than any `Hashable`: a concrete type keeps the table free of existential boxes
    /// (an `AnyHashable` would allocate per stored key and per call), the configuration's keys are strings anyway
    /// (client id, subject, IP text, header values, compound keys joined with a separator), and the Redis limiter
    /// of the scale-out issue needs a string key too. Keys up to 15 UTF-8 bytes are stored inline.
    public func decide(_ key: String, now: UInt64) -> RateLimitDecision {
        let shard = shards[key.hashValue & shardMask]
        return shard.state.withLock { $0.decide(key, now: now, gcra: gcra) }
    }

    /// Counters since creation, summed over the shards (one lock each, in turn: not a consistent snapshot across
    /// shards, which `GET /rate-limits` does not need).
    public func stats() -> RateLimitStats {
        var total = RateLimitStats()
        for shard in shards {
            shard.state.withLock { state in
                total.trackedKeys += state.index.count
                total.allowed += state.allowed
                total.limited += state.limited
                total.delayed += state.delayed
                total.evictedLive += state.evictedLive
            }
        }
        return total
    }

    /// Drops every key that has been idle for `idleExpiry` (with the default, every key whose bucket is full again);
    /// returns how many. For a periodic sweep off the data path; decisions reclaim such keys on their own.
    @discardableResult
    public func purge(now: UInt64) -> Int {
        let nowTicks = gcra.ticks(now)
        var dropped = 0
        for shard in shards {
            dropped += shard.state.withLock { $0.purge(nowTicks: nowTicks) }
        }
        return dropped
    }

    /// Whole seconds for `Retry-After`: rounded up, at least 1 (never earlier than a retry could succeed).
    public static func retryAfterSeconds(_ nanoseconds: UInt64) -> Int {
        max(1, Int(clamping: nanoseconds / 1_000_000_000 + (nanoseconds % 1_000_000_000 == 0 ? 0 : 1)))
    }
}

/// One shard's lock, in a class of its own so that the shards do not share cache lines through one array buffer.
private final class RateLimitShardBox: Sendable {
    let state: Mutex<RateLimitShard>
    init(_ shard: RateLimitShard) { state = Mutex(shard) }
}

/// One shard: key → slot, and the slots (structure of arrays, so the CLOCK hand's scans touch only what they read).
struct RateLimitShard: Sendable {
    let capacity: Int
    /// Ticks a bucket takes to fill from empty, and the idle expiry in ticks: a slot may be dropped once
    /// `tat + idleTicks ≤ now + fillTicks` (with the default expiry: once `tat ≤ now`).
    let fillTicks: UInt128
    let idleTicks: UInt128
    var index: [String: Int] = [:]
    var keys: [String] = []
    var tats: [UInt128] = []
    var referenced: [Bool] = []
    var hand = 0
    var allowed = 0
    var limited = 0
    var delayed = 0
    var evictedLive = 0

    init(capacity: Int, fillTicks: UInt128, idleTicks: UInt128) {
        self.capacity = capacity
        self.fillTicks = fillTicks
        self.idleTicks = idleTicks
    }

    @inline(__always)
    func isIdle(_ slot: Int, nowTicks: UInt128) -> Bool {
        tats[slot] + idleTicks <= nowTicks + fillTicks
    }

    mutating func decide(_ key: String, now: UInt64, gcra: GCRA) -> RateLimitDecision {
        if let slot = index[key] {
            let (decision, newTAT) = gcra.decide(stored: tats[slot], now: now)
            referenced[slot] = true
            if let newTAT { tats[slot] = newTAT }
            count(decision)
            return decision
        }
        let (decision, newTAT) = gcra.decide(stored: nil, now: now)
        if let newTAT { insert(key, tat: newTAT, nowTicks: gcra.ticks(now)) }
        count(decision)
        return decision
    }

    @inline(__always)
    mutating func count(_ decision: RateLimitDecision) {
        switch decision {
        case .allow: allowed += 1
        case .delay: delayed += 1
        case .refuse: limited += 1
        }
    }

    mutating func insert(_ key: String, tat: UInt128, nowTicks: UInt128) {
        if keys.count < capacity {
            // Not full: still let the hand look at one slot, so idle keys leave without waiting for pressure
            // (keeps `trackedKeys` close to the live count at O(1) per new key).
            if !keys.isEmpty {
                if hand >= keys.count { hand = 0 }
                if isIdle(hand, nowTicks: nowTicks) { remove(hand) } else { hand += 1 }
            }
            index[key] = keys.count
            keys.append(key)
            tats.append(tat)
            referenced.append(false)
            return
        }
        // Full: second chance. Idle slots go at once; a live slot used since the hand's last pass loses its mark and
        // is spared; the first live slot without a mark is evicted. Ends within two passes.
        while true {
            if hand >= keys.count { hand = 0 }
            if isIdle(hand, nowTicks: nowTicks) { break }
            if referenced[hand] {
                referenced[hand] = false
                hand += 1
                continue
            }
            evictedLive += 1
            break
        }
        index[keys[hand]] = nil
        index[key] = hand
        keys[hand] = key
        tats[hand] = tat
        referenced[hand] = false
        hand += 1
    }

    /// Swap-removes a slot (the last slot moves into it).
    mutating func remove(_ slot: Int) {
        index[keys[slot]] = nil
        let last = keys.count - 1
        if slot != last {
            keys[slot] = keys[last]
            tats[slot] = tats[last]
            referenced[slot] = referenced[last]
            index[keys[slot]] = slot
        }
        keys.removeLast()
        tats.removeLast()
        referenced.removeLast()
    }

    mutating func purge(nowTicks: UInt128) -> Int {
        var dropped = 0
        var slot = 0
        while slot < keys.count {
            if isIdle(slot, nowTicks: nowTicks) {
                remove(slot)
                dropped += 1
            } else {
                slot += 1
            }
        }
        return dropped
    }
}
