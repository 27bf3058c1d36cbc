import GatehouseTokens

/// A signing key with its schedule.
public struct ManagedKey: Sendable, Equatable {
    public var key: SigningKey
    public var createdAt: Int
    /// The key signs from this time on. Until then it is only published (the "next" key).
    public var activatesAt: Int

    public init(key: SigningKey, createdAt: Int, activatesAt: Int) {
        self.key = key
        self.createdAt = createdAt
        self.activatesAt = activatesAt
    }
}

/// Which keys sign, which are published, which can go. Pure: time is a parameter.
///
/// A new key is published first and signs only after `publishLead` (at least the JWKS cache period plus the
/// interval at which servers pick up new key files), so no verifier holding a cached JWKS meets an unknown `kid`.
/// A key stops signing when its successor activates and stays published for `retention` (the longest lifetime of
/// anything it signed) so every token it signed still verifies until it expires.
public struct KeyRing: Sendable, Equatable {
    public struct Policy: Sendable, Equatable {
        /// How long before it signs a new key is published. Default 5 min + 10 s.
        public var publishLead: Int = 310
        /// How long a retired key stays published. Default 1 h + 60 s.
        public var retention: Int = 3660
        /// Rotate automatically when the signing key is older than this; nil rotates only on demand.
        public var rotationPeriod: Int?

        public init(publishLead: Int = 310, retention: Int = 3660, rotationPeriod: Int? = nil) {
            self.publishLead = publishLead
            self.retention = retention
            self.rotationPeriod = rotationPeriod
        }
    }

    /// Keys ordered by activation time.
    public private(set) var keys: [ManagedKey]
    public let policy: Policy

    public init(keys: [ManagedKey], policy: Policy) {
        self.keys = keys.sorted { ($0.activatesAt, $0.createdAt, $0.key.kid) < ($1.activatesAt, $1.createdAt, $1.key.kid) }
        self.policy = policy
    }

    /// The key that signs at `now`: the most recently activated one.
    public func signingKey(at now: Int) -> ManagedKey? {
        keys.last { $0.activatesAt <= now }
    }

    /// When `key` stopped signing (its successor's activation), or nil while it is current or pending.
    public func retiredAt(_ key: ManagedKey, now: Int) -> Int? {
        guard let index = keys.firstIndex(of: key) else { return nil }
        return keys[(index + 1)...].first { $0.activatesAt <= now }?.activatesAt
    }

    /// Keys in the JWKS at `now`: pending, signing, and retired within the retention period.
    public func published(at now: Int) -> [ManagedKey] {
        keys.filter { key in
            guard let retired = retiredAt(key, now: now) else { return true }
            return now < retired + policy.retention
        }
    }

    /// Retired keys past retention: safe to delete.
    public func expired(at now: Int) -> [ManagedKey] {
        keys.filter { key in retiredAt(key, now: now).map { now >= $0 + policy.retention } ?? false }
    }

    /// Whether a new key should be created now: there is none that signs or will sign, or automatic rotation is
    /// due and no successor is pending already.
    public func needsNewKey(at now: Int) -> Bool {
        guard let current = signingKey(at: now) else { return !keys.contains { $0.activatesAt > now } }
        if keys.contains(where: { $0.activatesAt > now }) { return false }
        guard let period = policy.rotationPeriod else { return false }
        return now - current.activatesAt >= period
    }

    /// The schedule for a new key created at `now`: immediate when nothing signs yet (no verifier can have
    /// cached a key set without it), otherwise after the publish lead.
    public func activationTimeForNewKey(at now: Int) -> Int {
        signingKey(at: now) == nil && !keys.contains(where: { $0.activatesAt > now }) ? now : now + policy.publishLead
    }

    public mutating func add(_ key: ManagedKey) {
        self = KeyRing(keys: keys + [key], policy: policy)
    }

    public mutating func remove(kid: String) {
        keys.removeAll { $0.key.kid == kid }
    }
}
