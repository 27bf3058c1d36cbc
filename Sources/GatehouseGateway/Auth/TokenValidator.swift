import GatehouseObservability
import Crypto
import Foundation
import GatehouseConfiguration
import GatehouseObservability
import GatehousePolicies
import GatehouseTokens
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A token the gateway accepted: the JWT it forwards and the claims the per-route checks read. A class, so that the
/// data path copies one reference per request rather than four.
public final class ValidatedToken: Sendable, Equatable {
    /// What the backend receives: the client's JWT itself, or the JWT its opaque token was exchanged for.
    public let jwt: String
    /// `Bearer <jwt>`, built once.
    public let bearer: String
    public let scopes: Set<String>
    public let audiences: [String]
    public let issuer: String
    /// The client the token was issued to (`client_id`), for rate-limit keys and the access log.
    public let clientID: String?
    /// The user, or the client for client_credentials tokens (`sub`).
    public let subject: String?

    public init(jwt: String, scopes: Set<String>, audiences: [String], issuer: String, clientID: String? = nil, subject: String? = nil) {
        self.jwt = jwt
        self.bearer = "Bearer " + jwt
        self.scopes = scopes
        self.audiences = audiences
        self.issuer = issuer
        self.clientID = clientID
        self.subject = subject
    }

    public static func == (lhs: ValidatedToken, rhs: ValidatedToken) -> Bool {
        lhs.jwt == rhs.jwt && lhs.scopes == rhs.scopes && lhs.audiences == rhs.audiences && lhs.issuer == rhs.issuer
    }
}

/// Validates bearer tokens for every route of the gateway, shared by all event loops.
///
/// JWT-shaped tokens are verified locally against the authorization server's JWKS; other tokens are exchanged at the
/// authorization server (RFC 8693) for a JWT, which is verified the same way — or, with `exchange:
/// introspection_jwt`, introspected (RFC 7662) with a signed RFC 9701 response, which is verified and forwarded. Both results are cached by the
/// SHA-256 of the token (`TokenCache`: TTL bounded by the JWT's `exp` and `cache.max_ttl`, negative results for
/// `cache.negative_ttl`, single flight, LRU bound), so the data path answers a known token synchronously on its
/// event loop and only a miss leaves it: the fetch runs as a task and resumes the waiting requests on their loops.
public final class TokenValidator: Sendable {
    /// How a token is checked.
    public enum Kind: Sendable {
        /// Verified locally (a compact JWS).
        case jwt
        /// Exchanged at the authorization server.
        case opaque
    }

    public enum Outcome: Sendable, Equatable {
        case valid(ValidatedToken)
        /// Not acceptable: 401 invalid_token with this description.
        case invalid(String)
        /// Cannot be decided now (authorization server or its keys unreachable): 503, fail closed.
        case unavailable(String)
    }

    /// A cached token is answered at once; anything else later, on the caller's event loop.
    public enum Answer: Sendable {
        /// Valid from the cache, which vouches for it until `until` (the clock's seconds): a connection may remember
        /// it that long.
        case cached(ValidatedToken, until: Double)
        case now(Outcome)
        case later(EventLoopFuture<Outcome>)
    }

    /// The validator's clock (Unix seconds unless a test injected another).
    public func now() -> Double { clock() }

    /// Counters for the admin endpoint and tests.
    public struct Statistics: Sendable, Equatable {
        public var cache: TokenCache<ValidatedToken>.Statistics
        public var entries: Int
        /// Exchanges (or introspections) sent to the authorization server.
        public var exchanges: Int
        /// Signature verifications done (cache misses of JWTs, and every exchanged JWT).
        public var verifications: Int
        /// Unknown tokens answered 503 at once because `maxConcurrentFetches` fetches were under way.
        public var shed: Int
    }

    private struct State {
        var cache: TokenCache<ValidatedToken>
        var waiters: [Int: EventLoopPromise<Outcome>] = [:]
        /// Fetches under way (each is one call to the authorization server or one signature check).
        var fetching = 0
        var exchanges = 0
        var verifications = 0
        var shed = 0
    }

    /// Fetches allowed at once. A flood of distinct unknown tokens beyond this is answered 503 at once instead of
    /// opening a connection to the authorization server per token. Default 256.
    public let maxConcurrentFetches: Int

    public let settings: GatewayConfiguration.AuthorizationServer
    public let client: AuthorizationServerClient
    private let keys: RemoteJWKSVerifier
    private let state: NIOLockedValueBox<State>
    private let clock: @Sendable () -> Double
    private let logger: Logger
    private let discovery = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// Answers cache misses instead of the authorization server and the key set: tests only. It is called on the
    /// requesting loop and its future completes there, so a test on an `EmbeddedEventLoop` (which must not be touched
    /// from the task a real fetch runs in) decides when and how the authorization server answers.
    let missResolver: MissResolver?
    typealias MissResolver = @Sendable (_ token: String, _ kind: Kind, _ loop: any EventLoop) -> EventLoopFuture<(Outcome, TokenCache<ValidatedToken>.FetchResult)>
    /// `gatehouse_gateway_token_exchange_duration_seconds`: each exchange or introspection call, answered or not.
    public let exchangeDurations = AtomicHistograms(buckets: .requestDuration, labelSets: 1)
    /// `gatehouse_gateway_jwks_refreshes_total`: key-set fetches (discovery's, expiry's and unknown-kid refetches).
    public let jwksRefreshes: AtomicCounters
    /// `gatehouse_gateway_token_exchanges_total{result}`: exchanges (or introspections) by result — `ok`, `inactive`
    /// (the token is not active), `unavailable` (the authorization server could not be reached or its answer not
    /// trusted: the request got 503).
    public let exchangeResults = AtomicCounters(count: 3)
    public static let exchangeResultNames = ["ok", "inactive", "unavailable"]

    /// `clock` gives Unix seconds (tests move it).
    public convenience init(
        settings: GatewayConfiguration.AuthorizationServer, logger: Logger, maxConcurrentFetches: Int = 256,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }, tracer: GatehouseTracer? = nil
    ) {
        self.init(settings: settings, logger: logger, maxConcurrentFetches: maxConcurrentFetches, clock: clock, tracer: tracer, missResolver: nil)
    }

    init(
        settings: GatewayConfiguration.AuthorizationServer, logger: Logger, maxConcurrentFetches: Int = 256,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }, tracer: GatehouseTracer? = nil, missResolver: MissResolver?
    ) {
        self.missResolver = missResolver
        self.settings = settings
        self.maxConcurrentFetches = maxConcurrentFetches
        self.logger = logger
        self.clock = clock
        let client = AuthorizationServerClient(
            issuer: settings.issuer, clientID: settings.clientID, clientSecret: settings.clientSecret, trust: settings.caFile.map { .caFile($0) } ?? .system,
            tracer: tracer
        )
        self.client = client
        state = NIOLockedValueBox(
            State(
                cache: TokenCache(
                    configuration: .init(
                        capacity: settings.cache.capacity, maxTTL: Double(settings.cache.maxTTLMilliseconds) / 1000,
                        negativeTTL: Double(settings.cache.negativeTTLMilliseconds) / 1000
                    )
                )
            )
        )
        let jwksRefreshes = AtomicCounters(count: 1)
        self.jwksRefreshes = jwksRefreshes
        // Issuer and audience are per route (checked by `RouteAuthorization`); the key set decides the signer.
        keys = RemoteJWKSVerifier(
            verification: JWTVerificationPolicy(issuers: [], audiences: [], clockSkew: settings.clockSkewMilliseconds / 1000),
            policy: JWKSRefreshPolicy(
                minimumTTL: Double(settings.jwks.minTTLMilliseconds) / 1000, maximumTTL: Double(settings.jwks.maxTTLMilliseconds) / 1000,
                unknownKidInterval: Double(settings.jwks.unknownKidIntervalMilliseconds) / 1000
            ),
            clock: clock,
            fetcher: { [jwksRefreshes] in
                jwksRefreshes.add(0)
                return try await client.fetchJWKS()
            }
        )
    }

    // MARK: Discovery

    /// Starts discovery (retried with backoff until it succeeds) and then loads the key set.
    public func start() {
        guard missResolver == nil else { return }  // nothing to discover: a test answers for the authorization server
        discovery.withLockedValue { task in
            guard task == nil else { return }
            let retry = settings.discoveryRetry
            task = Task { [client, keys, logger] in
                do {
                    _ = try await client.discover(initial: .milliseconds(retry.initialMilliseconds), maximum: .milliseconds(retry.maxMilliseconds), logger: logger)
                    try await keys.prefetch()
                } catch is CancellationError {
                } catch {
                    // Requests will fetch the key set when they need it.
                    logger.warning("the authorization server's key set could not be loaded yet", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    public func stop() {
        discovery.withLockedValue { $0?.cancel() }
    }

    /// Whether the authorization server's metadata has been read (the gateway is not ready before).
    public var isReady: Bool { client.metadata != nil }

    public var statistics: Statistics {
        state.withLockedValue { Statistics(cache: $0.cache.statistics, entries: $0.cache.count, exchanges: $0.exchanges, verifications: $0.verifications, shed: $0.shed) }
    }

    // MARK: Validation

    /// Validates `token` from a request on `loop`.
    /// `trace`: the request's, whose server span is the parent of a call to the authorization server.
    public func validate(_ presented: String, kind: Kind, on loop: any EventLoop, trace: RequestTrace? = nil) -> Answer {
        var token = presented
        let key = token.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)).withUnsafeBytes { TokenKey(digestBytes: $0) } }
        let now = clock()
        let maxFetches = maxConcurrentFetches
        let (lookup, promise) = state.withLockedValue { state -> (TokenCache<ValidatedToken>.Lookup?, EventLoopPromise<Outcome>?) in
            let lookup = state.cache.lookup(key, now: now)
            switch lookup {
            case .fetch where state.fetching >= maxFetches:
                _ = state.cache.complete(key, result: .failed, now: now)  // nobody else waits: it was not in flight
                state.shed += 1
                return (nil, nil)
            case .fetch(let waiter):
                state.fetching += 1
                let promise = loop.makePromise(of: Outcome.self)
                state.waiters[waiter] = promise
                return (lookup, promise)
            case .wait(let waiter):
                let promise = loop.makePromise(of: Outcome.self)
                state.waiters[waiter] = promise
                return (lookup, promise)
            case .active, .inactive:
                return (lookup, nil)
            }
        }
        switch lookup {
        case nil:
            return .now(.unavailable("too many token checks are under way"))
        case .active(let token, let until):
            return .cached(token, until: until)
        case .inactive:
            return .now(.invalid("the token is not active"))
        case .wait:
            return .later(promise!.futureResult)
        case .fetch:
            if let missResolver {
                missResolver(token, kind, loop).whenSuccess { self.fetched(key, kind: kind, outcome: $0.0, result: $0.1) }
            } else {
                Task { await self.fetch(token, kind: kind, key: key, trace: trace) }
            }
            return .later(promise!.futureResult)
        }
    }

    private func fetch(_ token: String, kind: Kind, key: TokenKey, trace: RequestTrace?) async {
        let (outcome, result) = await resolve(token, kind: kind, trace: trace)
        fetched(key, kind: kind, outcome: outcome, result: result)
    }

    /// A fetch's answer: counted, cached, and handed to every request that waited for it.
    private func fetched(_ key: TokenKey, kind: Kind, outcome: Outcome, result: TokenCache<ValidatedToken>.FetchResult) {
        if case .opaque = kind {
            switch outcome {
            case .valid: exchangeResults.add(0)
            case .invalid: exchangeResults.add(1)
            case .unavailable: exchangeResults.add(2)
            }
        }
        let promises = state.withLockedValue { state in
            state.fetching -= 1
            return state.cache.complete(key, result: result, now: clock()).compactMap { state.waiters.removeValue(forKey: $0) }
        }
        for promise in promises { promise.succeed(outcome) }
    }

    private func resolve(_ token: String, kind: Kind, trace: RequestTrace?) async -> (Outcome, TokenCache<ValidatedToken>.FetchResult) {
        guard client.metadata != nil else { return (.unavailable("the authorization server has not been discovered yet"), .failed) }
        switch kind {
        case .jwt:
            return await verify(token, notAfter: nil, presentedByClient: true)
        case .opaque where settings.exchange == .introspectionJWT:
            state.withLockedValue { $0.exchanges += 1 }
            switch await exchangeDurations.time(0, { await client.introspectAsJWT(token, trace: trace) }) {
            case .response(let jwt):
                state.withLockedValue { $0.verifications += 1 }
                do {
                    let claims = try await keys.verifyIntrospectionResponse(jwt, requester: settings.clientID)
                    let validated = ValidatedToken(jwt: jwt, scopes: claims.scopes, audiences: claims.aud, issuer: claims.iss, clientID: claims.client_id, subject: claims.sub)
                    return (.valid(validated), .active(validated, expiresAt: Double(claims.exp)))
                } catch let error as JOSEError where error.code == .expired {
                    return (.invalid("the token is not active"), .inactive)  // inactive, or active but past its exp
                } catch {
                    logger.error("an introspection response did not verify", metadata: ["reason": "\(error)"])
                    return (.unavailable("the introspection response could not be verified"), .failed)
                }
            case .unavailable(let why):
                logger.warning("token introspection failed", metadata: ["reason": "\(why)"])
                return (.unavailable("the authorization server cannot be reached"), .failed)
            }
        case .opaque:
            state.withLockedValue { $0.exchanges += 1 }
            switch await exchangeDurations.time(0, { await client.exchange(token, trace: trace) }) {
            case .jwt(let jwt, let expiresAt):
                let (outcome, result) = await verify(jwt, notAfter: expiresAt, presentedByClient: false)
                if case .invalid(let why) = outcome {
                    // The authorization server's own JWT does not verify: nothing the client can fix, nothing to cache.
                    logger.error("a JWT from the token exchange did not verify", metadata: ["reason": "\(why)"])
                    return (.unavailable("the exchanged token could not be verified"), .failed)
                }
                return (outcome, result)
            case .inactive:
                return (.invalid("the token is not active"), .inactive)
            case .unavailable(let why):
                logger.warning("token exchange failed", metadata: ["reason": "\(why)"])
                return (.unavailable("the authorization server cannot be reached"), .failed)
            }
        }
    }

    /// Verifies a JWT. One a client presented must not have been minted for this gateway's backends: token exchange
    /// names the exchanging client in the RFC 8693 actor claim (`act.sub`), so a JWT whose actor is this gateway's
    /// own `client_id` is the phantom token of some client's opaque token, on its way to a backend — which may echo
    /// it. Accepted at the front door, it would outlive the revocation of the opaque token it stands for (the cache
    /// bound promised). Delegated tokens other parties obtained (another actor) are ordinary JWTs here.
    private func verify(_ jwt: String, notAfter: Double?, presentedByClient: Bool) async -> (Outcome, TokenCache<ValidatedToken>.FetchResult) {
        state.withLockedValue { $0.verifications += 1 }
        do {
            let claims = try await keys.verify(jwt)
            if presentedByClient && claims.act?.sub == settings.clientID {
                return (.invalid("the token was issued for the gateway's backends and is not accepted from clients"), .inactive)
            }
            let validated = ValidatedToken(jwt: jwt, scopes: claims.scopes, audiences: claims.aud, issuer: claims.iss, clientID: claims.client_id, subject: claims.sub)
            return (.valid(validated), .active(validated, expiresAt: min(Double(claims.exp), notAfter ?? .infinity)))
        } catch let error as JOSEError {
            if error.code == .keySetUnavailable { return (.unavailable("the authorization server's keys cannot be loaded"), .failed) }
            // An unknown kid is refused but not remembered: the key may appear at the next allowed refetch (someone
            // sending made-up kids must not be able to get a real new key's tokens cached as bad).
            if error.code == .unknownKey { return (.invalid(Self.describe(error)), .failed) }
            return (.invalid(Self.describe(error)), .inactive)
        } catch {
            return (.invalid("the token is not a valid JWT"), .inactive)
        }
    }

    /// A client-facing description (never the token).
    static func describe(_ error: JOSEError) -> String {
        switch error.code {
        case .expired: "the token has expired"
        case .notYetValid: "the token is not valid yet"
        case .algorithmNotAllowed: "the token's algorithm is not accepted"
        case .unknownKey: "the token's signing key is not known"
        case .badSignature: "the token's signature does not verify"
        case .wrongType: "the token is not an access token (typ at+jwt)"
        case .wrongIssuer: "the token's issuer is not accepted"
        case .wrongAudience: "the token's audience is not accepted"
        case .malformed, .invalidKey, .keySetUnavailable: "the token is not a valid JWT"
        }
    }
}

/// A route's token policy, compiled: which tokens it takes and what they must carry. A class: the data path reads
/// it once per request through one reference.
public final class RouteAuthorization: Sendable {
    public let mode: GatewayConfiguration.Route.Auth.Mode
    public let scopes: ScopeRequirement
    /// Empty: any audience.
    public let audiences: Set<String>
    /// Empty: any issuer the key set verifies.
    public let issuers: Set<String>
    public let realm: String
    public let validator: TokenValidator
    /// Request header the JWT goes upstream in (`Authorization` as `Bearer <jwt>`, else the bare JWT).
    public let forwardHeader: String
    /// Whether `forwardHeader` is `Authorization` (then the client's copy is already gone with it).
    public let forwardsBearer: Bool
    /// The route's refusals that depend on nothing but the route, built once with it (`GatewayReply`): the 401 for a
    /// request without a token, and the 401/403 of `check` — issuer, audience, the `allOf` and `anyOf` scopes.
    let missingTokenReply: GatewayReply
    private let checkReplies: CheckReplies

    private struct CheckReplies: Sendable {
        let wrongIssuer: (challenge: BearerChallenge, reply: GatewayReply)
        let wrongAudience: (challenge: BearerChallenge, reply: GatewayReply)
        let missingAllOf: (challenge: BearerChallenge, reply: GatewayReply)
        let missingAnyOf: (challenge: BearerChallenge, reply: GatewayReply)
    }

    public init(
        mode: GatewayConfiguration.Route.Auth.Mode, scopes: ScopeRequirement, audiences: Set<String>, issuers: Set<String>, realm: String,
        validator: TokenValidator, forwardHeader: String
    ) {
        self.mode = mode
        self.scopes = scopes
        self.audiences = audiences
        self.issuers = issuers
        self.realm = realm
        self.validator = validator
        self.forwardHeader = forwardHeader
        self.forwardsBearer = HeaderHygiene.equalsIgnoringCase(forwardHeader, "authorization")
        func prebuilt(_ challenge: BearerChallenge) -> (challenge: BearerChallenge, reply: GatewayReply) {
            (challenge, RoutePolicy.reply(.challenge(challenge), close: false))
        }
        self.missingTokenReply = prebuilt(BearerChallenge(realm: realm)).reply
        func missingScope(_ unmet: ScopeRequirement.Unmet) -> (challenge: BearerChallenge, reply: GatewayReply) {
            prebuilt(BearerChallenge(realm: realm, error: .insufficientScope, description: "the token lacks a required scope", scope: scopes.challengeScope(unmet)))
        }
        self.checkReplies = CheckReplies(
            wrongIssuer: prebuilt(BearerChallenge(realm: realm, error: .invalidToken, description: "the token's issuer is not accepted here")),
            wrongAudience: prebuilt(BearerChallenge(realm: realm, error: .invalidToken, description: "the token's audience is not accepted here")),
            missingAllOf: missingScope(.allOf), missingAnyOf: missingScope(.anyOf)
        )
    }

    /// The kind of check for a presented token, or why the route does not take it.
    public func kind(of token: String) -> Result<TokenValidator.Kind, BearerChallenge> {
        if BearerToken.isJWTShaped(token) {
            guard mode.acceptsJWT else { return .failure(challenge(.invalidToken, "this route takes opaque access tokens, not JWTs")) }
            return .success(.jwt)
        }
        guard mode.acceptsOpaque else { return .failure(challenge(.invalidToken, "this route takes JWT access tokens")) }
        return .success(.opaque)
    }

    /// The route's own checks on a validated token: nil when it may pass.
    public func check(_ token: ValidatedToken) -> BearerChallenge? {
        refusal(token)?.challenge
    }

    /// `check`'s challenge with its reply, both prebuilt.
    func refusal(_ token: ValidatedToken) -> (challenge: BearerChallenge, reply: GatewayReply)? {
        if !issuers.isEmpty && !issuers.contains(token.issuer) { return checkReplies.wrongIssuer }
        if !audiences.isEmpty && !token.audiences.contains(where: audiences.contains) { return checkReplies.wrongAudience }
        switch scopes.unmet(by: token.scopes) {
        case .allOf: return checkReplies.missingAllOf
        case .anyOf: return checkReplies.missingAnyOf
        case nil: return nil
        }
    }

    public func challenge(_ error: BearerChallenge.ErrorCode?, _ description: String? = nil) -> BearerChallenge {
        BearerChallenge(realm: realm, error: error, description: description)
    }

    /// The value of `forwardHeader` for a token.
    public func forwardValue(_ token: ValidatedToken) -> String {
        forwardsBearer ? token.bearer : token.jwt
    }
}
