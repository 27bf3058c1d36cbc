/// The gateway's cache of token decisions (the JWT an opaque token was exchanged for, or "inactive"), keyed by the
/// SHA-256 of the token — never the token itself. A pure state machine: time is a parameter, and fetching is the
/// caller's job (the adapter on the data path); the machine only says who fetches and who waits.
///
/// - Active results live until min(the JWT's `exp`, now + `maxTTL`), so a revocation at the authorization server
///   takes effect within `maxTTL`.
/// - Inactive results are remembered for `negativeTTL`, so a flood of bad tokens does not reach the authorization
///   server.
/// - Single flight: the first miss for a key fetches; concurrent lookups of the same key wait for that fetch.
/// - Bounded: beyond `capacity` entries the least recently used goes (counted as an eviction).
public struct TokenCache<Value: Sendable>: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Entries kept at most. Default 100,000.
        public var capacity: Int = 100_000
        /// Longest an active result is reused, in seconds. Default 30.
        public var maxTTL: Double = 30
        /// How long an inactive result is remembered, in seconds. Default 5.
        public var negativeTTL: Double = 5

        public init(capacity: Int = 100_000, maxTTL: Double = 30, negativeTTL: Double = 5) {
            self.capacity = capacity
            self.maxTTL = maxTTL
            self.negativeTTL = negativeTTL
        }
    }

    /// A cached decision.
    public enum Decision: Sendable, Equatable where Value: Equatable {
        case active(Value)
        case inactive
    }

    /// What a lookup tells the caller to do.
    public enum Lookup: Sendable {
        /// Cached as active, and may be used until `until`.
        case active(Value, until: Double)
        case inactive
        /// Nobody is fetching this key: fetch it, then call `complete` with this waiter id too.
        case fetch(waiter: Int)
        /// A fetch is under way: wait for `complete` to name this waiter.
        case wait(waiter: Int)
    }

    /// The result of a fetch.
    public enum FetchResult: Sendable {
        /// Active until `expiresAt` (seconds, same clock as `now`).
        case active(Value, expiresAt: Double)
        case inactive
        /// The authorization server could not be asked: nothing is cached, waiters are told to fail.
        case failed
    }

    /// Counters for metrics.
    public struct Statistics: Sendable, Equatable {
        public var hits = 0
        public var negativeHits = 0
        public var misses = 0
        public var coalesced = 0
        public var evictions = 0
        public var expirations = 0
    }

    private enum Stored: Sendable {
        case active(Value)
        case inactive
    }

    private struct Entry: Sendable {
        var stored: Stored
        var expiresAt: Double
        var previous: Int
        var next: Int
        var key: TokenKey
    }

    public let configuration: Configuration
    public private(set) var statistics = Statistics()
    private var index: [TokenKey: Int] = [:]
    private var entries: [Entry] = []
    private var freeSlots: [Int] = []
    /// Most recently used at `head`, least at `tail`; -1 is none.
    private var head = -1
    private var tail = -1
    private var inFlight: [TokenKey: [Int]] = [:]
    private var nextWaiter = 0

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    public var count: Int { index.count }

    /// Looks a token up at time `now`.
    public mutating func lookup(_ key: TokenKey, now: Double) -> Lookup {
        if let slot = index[key] {
            let entry = entries[slot]
            if entry.expiresAt > now {
                moveToFront(slot)
                switch entry.stored {
                case .active(let value):
                    statistics.hits += 1
                    return .active(value, until: entry.expiresAt)
                case .inactive:
                    statistics.negativeHits += 1
                    return .inactive
                }
            }
            remove(slot)
            statistics.expirations += 1
        }
        nextWaiter += 1
        if inFlight[key] != nil {
            inFlight[key]!.append(nextWaiter)
            statistics.coalesced += 1
            return .wait(waiter: nextWaiter)
        }
        inFlight[key] = [nextWaiter]
        statistics.misses += 1
        return .fetch(waiter: nextWaiter)
    }

    /// Records a fetch's result; returns the waiters (the fetcher included) to resume with it.
    public mutating func complete(_ key: TokenKey, result: FetchResult, now: Double) -> [Int] {
        let waiters = inFlight.removeValue(forKey: key) ?? []
        switch result {
        case .active(let value, let expiresAt):
            let until = min(expiresAt, now + configuration.maxTTL)
            if until > now { store(key, .active(value), until: until) }
        case .inactive:
            store(key, .inactive, until: now + configuration.negativeTTL)
        case .failed:
            break
        }
        return waiters
    }

    /// Forgets a token (for instance after the backend saw it revoked).
    public mutating func invalidate(_ key: TokenKey) {
        if let slot = index[key] { remove(slot) }
    }

    // MARK: LRU list

    private mutating func store(_ key: TokenKey, _ stored: Stored, until: Double) {
        if let slot = index[key] {
            entries[slot].stored = stored
            entries[slot].expiresAt = until
            moveToFront(slot)
            return
        }
        while index.count >= configuration.capacity, tail >= 0 {
            remove(tail)
            statistics.evictions += 1
        }
        let entry = Entry(stored: stored, expiresAt: until, previous: -1, next: head, key: key)
        let slot: Int
        if let free = freeSlots.popLast() {
            entries[free] = entry
            slot = free
        } else {
            entries.append(entry)
            slot = entries.count - 1
        }
        if head >= 0 { entries[head].previous = slot }
        head = slot
        if tail < 0 { tail = slot }
        index[key] = slot
    }

    private mutating func unlink(_ slot: Int) {
        let previous = entries[slot].previous
        let next = entries[slot].next
        if previous >= 0 { entries[previous].next = next } else { head = next }
        if next >= 0 { entries[next].previous = previous } else { tail = previous }
        entries[slot].previous = -1
        entries[slot].next = -1
    }

    private mutating func moveToFront(_ slot: Int) {
        guard head != slot else { return }
        unlink(slot)
        entries[slot].next = head
        if head >= 0 { entries[head].previous = slot }
        head = slot
        if tail < 0 { tail = slot }
    }

    private mutating func remove(_ slot: Int) {
        unlink(slot)
        index[entries[slot].key] = nil
        freeSlots.append(slot)
    }
}

/// The SHA-256 digest of a token, as four words: the cache key. Holding the digest, not the token, means a heap dump
/// of the gateway reveals no usable credential.
public struct TokenKey: Hashable, Sendable {
    public var words: (UInt64, UInt64, UInt64, UInt64)

    public init(digest: some Sequence<UInt8>) {
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var count = 0
        for byte in digest {
            switch count / 8 {
            case 0: words.0 = words.0 << 8 | UInt64(byte)
            case 1: words.1 = words.1 << 8 | UInt64(byte)
            case 2: words.2 = words.2 << 8 | UInt64(byte)
            default: words.3 = words.3 << 8 | UInt64(byte)
            }
            count += 1
        }
        precondition(count == 32, "a SHA-256 digest has 32 bytes")
        self.words = words
    }

    /// The same key from the digest's 32 bytes in memory (four loads instead of a loop over bytes; the data path
    /// computes one per request).
    public init(digestBytes raw: UnsafeRawBufferPointer) {
        precondition(raw.count == 32, "a SHA-256 digest has 32 bytes")
        words = (
            UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
            UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
            UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
            UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        )
    }

    public static func == (lhs: TokenKey, rhs: TokenKey) -> Bool {
        lhs.words == rhs.words
    }

    /// Two of the four words: the digest is already uniformly distributed (and nobody can choose it).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
    }
}
