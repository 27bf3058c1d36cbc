/// When a JWKS must be fetched again. Pure: time (seconds) is a parameter.
///
/// A key set is kept for its `Cache-Control: max-age`, bounded to [`minimumTTL`, `maximumTTL`]. A token whose `kid`
/// is not in the set triggers a refetch — but at most one per `unknownKidInterval`, so a flood of tokens with
/// made-up kids cannot turn the verifier into a load generator against the authorization server.
public struct JWKSRefreshPolicy: Sendable, Equatable {
    /// Default 60 s.
    public var minimumTTL: Double = 60
    /// Default 24 h.
    public var maximumTTL: Double = 86400
    /// Default 30 s.
    public var unknownKidInterval: Double = 30

    public init(minimumTTL: Double = 60, maximumTTL: Double = 86400, unknownKidInterval: Double = 30) {
        self.minimumTTL = minimumTTL
        self.maximumTTL = maximumTTL
        self.unknownKidInterval = unknownKidInterval
    }

    /// How long a key set fetched with this max-age (nil: no Cache-Control) is used.
    public func ttl(maxAge: Double?) -> Double {
        min(maximumTTL, max(minimumTTL, maxAge ?? minimumTTL))
    }

    /// What to do for a token with `kid`, given the cached set.
    public enum Decision: Equatable, Sendable {
        /// Verify with the cached set.
        case useCached
        /// Fetch first (no set, expired, or an unknown kid and the interval has passed).
        case fetch
        /// The kid is unknown and a refetch was done too recently: reject the token.
        case rejectUnknownKid
    }

    public func decide(kid: String?, known: Set<String>?, fetchedAt: Double?, expiresAt: Double?, lastUnknownKidFetch: Double?, now: Double) -> Decision {
        guard let known, let expiresAt, now < expiresAt else { return .fetch }
        if let kid, known.contains(kid) { return .useCached }
        if let last = lastUnknownKidFetch, now - last < unknownKidInterval { return .rejectUnknownKid }
        if let fetchedAt, now - fetchedAt < unknownKidInterval, lastUnknownKidFetch == nil {
            // The set is brand new: a kid missing from it now will not appear by asking again at once.
            return .rejectUnknownKid
        }
        return .fetch
    }
}
