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

    struct Entry: Equatable {
        var failures: Int
        var lastFailure: Int
    }

    public let policy: Policy
    private(set) var entries: [String: Entry] = [:]

    public init(policy: Policy) {
        self.policy = policy
    }

    /// Seconds to wait before `key` may try again, or nil when it may try now.
    public func retryAfter(_ key: String, now: Int) -> Int? {
        guard let entry = entries[key], now - entry.lastFailure < policy.failureWindow else { return nil }
        let excess = entry.failures - policy.maxFailuresBeforeDelay
        guard excess >= 0 else { return nil }
        let delay = excess >= 30 ? policy.maxDelay : min(policy.maxDelay, policy.baseDelay << excess)
        let remaining = entry.lastFailure + delay - now
        return remaining > 0 ? remaining : nil
    }

    public mutating func recordFailure(_ key: String, now: Int) {
        if var entry = entries[key], now - entry.lastFailure < policy.failureWindow {
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

    private mutating func evictOldest(now: Int) {
        entries = entries.filter { now - $0.value.lastFailure < policy.failureWindow }
        if entries.count >= policy.maxTrackedKeys, let oldest = entries.min(by: { $0.value.lastFailure < $1.value.lastFailure }) {
            entries[oldest.key] = nil
        }
    }
}
