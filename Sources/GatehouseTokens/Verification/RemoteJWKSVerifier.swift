/// Verifies JWT access tokens against a JWKS fetched from the authorization server, cached per its
/// `Cache-Control`, refreshed on an unknown `kid` at most once per interval, with concurrent refreshes coalesced
/// into one fetch. The library a Swift backend uses to trust gateway-issued JWTs without a network call per request.
public actor RemoteJWKSVerifier {
    /// Fetches the key set: the document and its `max-age` in seconds (nil when the response had none).
    public typealias Fetcher = @Sendable () async throws -> (json: String, maxAge: Double?)
    /// Seconds since some fixed point (tests inject a manual clock).
    public typealias Clock = @Sendable () -> Double

    private let fetcher: Fetcher
    private let clock: Clock
    public let policy: JWKSRefreshPolicy
    public let verification: JWTVerificationPolicy

    private var verifier: JWTVerifier?
    private var fetchedAt: Double?
    private var expiresAt: Double?
    private var lastUnknownKidFetch: Double?
    private var inFlight: Task<JWTVerifier, any Error>?
    /// Whether the most recent fetch failed (the authorization server unreachable).
    private var lastRefreshFailed = false
    /// Fetches made (for metrics and tests).
    public private(set) var fetches = 0

    public init(verification: JWTVerificationPolicy, policy: JWKSRefreshPolicy = .init(), clock: @escaping Clock, fetcher: @escaping Fetcher) {
        self.verification = verification
        self.policy = policy
        self.clock = clock
        self.fetcher = fetcher
    }

    /// Verifies a token; throws `JOSEError` (unknownKey when the kid stays unknown, keySetUnavailable when no key set
    /// could be fetched at all).
    public func verify(_ token: String) async throws -> AccessTokenClaims {
        let keys = try await keySet(for: token)
        return try await keys.verifyAccessToken(token, policy: verification, now: Int(clock()))
    }

    /// Verifies an RFC 9701 JWT introspection response (made for `requester` when given) and returns the
    /// introspected token's claims, checked like an access token's.
    public func verifyIntrospectionResponse(_ jwt: String, requester: String?) async throws -> AccessTokenClaims {
        let keys = try await keySet(for: jwt)
        return try await keys.verifyIntrospectionResponse(jwt, policy: verification, requester: requester, now: Int(clock()))
    }

    /// The key set to verify `token` with: the cached one, or a fresh one when it is stale or lacks the token's kid
    /// (within the refetch rules).
    private func keySet(for token: String) async throws -> JWTVerifier {
        let kid = (try? JWSHeader(token: token))?.kid
        let now = clock()
        let decision = policy.decide(
            kid: kid, known: verifier.map { Set($0.published.keys) }, fetchedAt: fetchedAt, expiresAt: expiresAt,
            lastUnknownKidFetch: lastUnknownKidFetch, now: now
        )
        var current = verifier
        switch decision {
        case .useCached:
            break
        case .rejectUnknownKid:
            // A refetch under way may bring the kid: share it rather than refuse.
            if let inFlight, let refreshed = try? await inFlight.value {
                current = refreshed
            } else if lastRefreshFailed {
                // The last attempt to learn new keys failed: the kid may well be real. Not the token's fault.
                throw JOSEError(.keySetUnavailable, "the key set could not be refreshed for a new kid")
            } else {
                throw JOSEError(.unknownKey, "the token's kid is not in the key set")
            }
        case .fetch:
            if verifier != nil, let kid, verifier?.published[kid] == nil { lastUnknownKidFetch = now }
            do {
                current = try await refresh()
                lastRefreshFailed = false
            } catch {
                lastRefreshFailed = true
                // The key set could not be fetched (or was not a key set): keep verifying with the cached one, unless
                // the token needs a key that set does not have — then nobody can tell whether the token is good.
                guard let cached = current else { throw JOSEError(.keySetUnavailable, "the key set could not be fetched: \(error)") }
                if let kid, cached.published[kid] == nil { throw JOSEError(.keySetUnavailable, "the key set could not be refreshed for a new kid: \(error)") }
            }
        }
        guard let current else { throw JOSEError(.keySetUnavailable, "no key set") }
        return current
    }

    /// Fetches the key set now (at start, so that the first request does not wait for it).
    public func prefetch() async throws {
        _ = try await refresh()
    }

    /// One fetch at a time: callers arriving while one runs share its result.
    private func refresh() async throws -> JWTVerifier {
        if let inFlight { return try await inFlight.value }
        let fetcher = self.fetcher
        let policy = self.policy
        let clock = self.clock
        let task = Task { () throws -> JWTVerifier in
            let (json, maxAge) = try await fetcher()
            let verifier = try await JWTVerifier(jwksJSON: json)
            await self.installed(verifier, ttl: policy.ttl(maxAge: maxAge), at: clock())
            return verifier
        }
        inFlight = task
        fetches += 1
        defer { inFlight = nil }
        return try await task.value
    }

    private func installed(_ verifier: JWTVerifier, ttl: Double, at now: Double) {
        self.verifier = verifier
        fetchedAt = now
        expiresAt = now + ttl
    }
}
