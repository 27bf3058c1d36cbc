import GatehouseStore

/// Throttles password guessing per key (a username, an IP address). Pure state machine over an injected time.
///
/// After `maxFailuresBeforeDelay` failures within `failureWindow`, each further attempt must wait
/// `baseDelay * 2^(failures - maxFailuresBeforeDelay)` seconds from the last failure, capped at `maxDelay`.
/// Failures older than the window are forgotten and a success clears the key, so the real user is delayed but
/// never locked out for good.
public struct LoginThrottle: Sendable {
    /// Policy; the defaults match `AuthServerConfiguration.Login`.
    public struct Policy: Sendable, Equatable {
        public var maxFailuresBeforeDelay: Int = 5
        public var baseDelay: Int = 1
        public var maxDelay: Int = 900
        public var failureWindow: Int = 900
        /// Keys tracked at most; the oldest are dropped past it so a flood of usernames cannot exhaust memory.
        public var maxTrackedKeys: Int = 100_000

        public init(maxFailuresBeforeDelay: Int = 5, baseDelay: Int = 1, maxDelay: Int = 900, failureWindow: Int = 900, maxTrackedKeys: Int = 100_000) {
            self.maxFailuresBeforeDelay = maxFailuresBeforeDelay
            self.baseDelay = baseDelay
            self.maxDelay = maxDelay
            self.failureWindow = failureWindow
            self.maxTrackedKeys = maxTrackedKeys
        }
    }

    /// A key's counters: a value type that a shared store keeps as a row (`LoginThrottleRecord`).
    typealias Entry = LoginThrottleRecord

    public let policy: Policy
    private(set) var entries: [String: Entry] = [:]

    public init(policy: Policy) {
        self.policy = policy
    }

    /// A throttle over given entries: how a shared store's rows, locked for one transaction, are decided on with
    /// exactly the rules of the in-memory throttle.
    init(policy: Policy, entries: [String: Entry]) {
        self.policy = policy
        self.entries = entries
    }

    /// Seconds to wait before `key` may try again, or nil when it may try now.
    public func retryAfter(_ key: String, now: Int) -> Int? {
        guard let entry = entries[key] else { return nil }
        let failures = now - entry.lastFailure < policy.failureWindow ? entry.failures : 0
        let pending = livePending(entry, now: now)
        let excess = failures + pending - policy.maxFailuresBeforeDelay
        guard excess >= 0 else { return nil }
        let delay = excess >= 30 ? policy.maxDelay : min(policy.maxDelay, policy.baseDelay << excess)
        let reference = pending > 0 ? max(entry.lastFailure, entry.lastReserved) : entry.lastFailure
        let remaining = reference + delay - now
        return remaining > 0 ? remaining : nil
    }

    /// Counts an attempt for every key before its password is evaluated, so that N concurrent guesses cannot all
    /// pass a check made before any of them had failed: each is counted as a failure until `settle` says
    /// otherwise. Returns the wait, counting nothing, when any key must wait.
    public mutating func reserve(_ keys: [String], now: Int) -> Int? {
        if let wait = keys.compactMap({ retryAfter($0, now: now) }).max() { return wait }
        for key in keys {
            var entry: Entry
            if let existing = entries[key] {
                entry = existing
                if now - entry.lastFailure >= policy.failureWindow { entry.failures = 0 }
                entry.pending = livePending(entry, now: now)
            } else {
                if entries.count >= policy.maxTrackedKeys { evictOldest(now: now) }
                entry = Entry(failures: 0, lastFailure: now)
            }
            entry.pending += 1
            entry.lastReserved = now
            entries[key] = entry
        }
        return nil
    }

    /// The outcome of an attempt `reserve` counted: a failure stays counted; otherwise (a success, or an attempt
    /// that was never evaluated because the hashing queue was full) the reservation is taken back.
    public mutating func settle(_ key: String, failed: Bool, now: Int) {
        guard var entry = entries[key] else {
            // Cleared meanwhile (a success for the same username): a failure still counts.
            if failed { recordFailure(key, now: now) }
            return
        }
        entry.pending = max(0, entry.pending - 1)
        if failed {
            if now - entry.lastFailure >= policy.failureWindow { entry.failures = 0 }
            entry.failures += 1
            entry.lastFailure = now
        }
        entries[key] = entry.failures == 0 && entry.pending == 0 ? nil : entry
    }

    public mutating func recordFailure(_ key: String, now: Int) {
        if var entry = entries[key] {
            if now - entry.lastFailure >= policy.failureWindow { entry.failures = 0 }
            entry.failures += 1
            entry.lastFailure = now
            entries[key] = entry
            return
        }
        if entries.count >= policy.maxTrackedKeys { evictOldest(now: now) }
        entries[key] = Entry(failures: 1, lastFailure: now)
    }

    public mutating func recordSuccess(_ key: String) {
        entries[key] = nil
    }

    /// How many failures `key` has within the window.
    public func failures(_ key: String, now: Int) -> Int {
        guard let entry = entries[key], now - entry.lastFailure < policy.failureWindow else { return 0 }
        return entry.failures
    }

    /// Reservations not settled within a window are dropped: a process that stopped between `reserve` and
    /// `settle` (possible once counters outlive it in a shared database) must not hold a key back for good. Hashing
    /// a password takes well under a second, so no live reservation is that old.
    private func livePending(_ entry: Entry, now: Int) -> Int {
        now - entry.lastReserved < policy.failureWindow ? entry.pending : 0
    }

    private mutating func evictOldest(now: Int) {
        entries = entries.filter { $0.value.pending > 0 || now - $0.value.reference < policy.failureWindow }
        if entries.count >= policy.maxTrackedKeys, let oldest = entries.min(by: { $0.value.reference < $1.value.reference }) {
            entries[oldest.key] = nil
        }
    }
}

extension LoginThrottleRecord {
    /// The time delays count from: the last failure, or the last reservation while one is pending.
    var reference: Int { pending > 0 ? max(lastFailure, lastReserved) : lastFailure }
}
