import GatehousePolicies
import GatehouseTokens
import NIOCore
import NIOHTTP1

/// Which policy decided (outcomes, logs, metrics labels).
enum PolicyKind: String, Equatable, Sendable {
    case bearer
    case priority
    case rateLimit = "rate_limit"
    case circuitBreaker = "circuit_breaker"
    case admission
}

/// A route's policies, a closed set compiled per route at load and reload, run in order after routing. A `switch`
/// over an enum rather than `any Policy`: no existential box, no witness-table call, nothing allocated per request;
/// each arm inlines. (Envoy's decoder filters, whose Continue / sendLocalReply / StopIteration +
/// continueDecoding are `proceed` / `reject` / `suspend` here.)
enum RoutePolicy {
    /// RFC 6750 bearer tokens, checked as the route's `auth:` says.
    case bearer(RouteAuthorization)
    /// `priority_overrides`: the request's priority class by its token (after `bearer`).
    case priority(PriorityOverrides)
    /// `rate_limits`: every limit must allow the request (429 otherwise; a delay when `max_delay` allows).
    case rateLimit(RouteRateLimits)
    /// `admission` of the route's cluster: a slot now, a place in the priority queue, or 503 `overloaded`.
    case admission(ClusterAdmission)
    /// `circuit_breaker`: 503 `circuit_open` (or the fallback) without touching the upstream while open. Last, just
    /// before the upstream: a half-open trial is spent only on a request that is about to be tried.
    case circuitBreaker(RouteCircuitBreaker)

    var kind: PolicyKind {
        switch self {
        case .bearer: .bearer
        case .priority: .priority
        case .rateLimit: .rateLimit
        case .admission: .admission
        case .circuitBreaker: .circuitBreaker
        }
    }
}

/// A policy's answer for one request.
enum PolicyVerdict {
    /// Go on to the next policy (then forward).
    case proceed
    /// Answer with this instead of forwarding.
    case reject(GatewayReply)
    /// Wait for the future, then resume with what it says; reads from the client stay paused meanwhile.
    case suspend(EventLoopFuture<PolicyResumption>)
}

/// What a suspended policy resumes with.
enum PolicyResumption {
    /// Go on; `identity`, when set, is the request's validated token.
    case proceed(identity: ValidatedToken?)
    case reject(GatewayReply)
    /// The route's rate limits concluded after Redis answered: applied to the request, then proceed or refuse.
    case rateLimit(RateLimitResolution)
}

/// Per-connection state policies keep between requests (confined to the connection's loop).
struct ConnectionPolicyState {
    /// The last token this connection presented on a token-checked route and the route's verdict, for as long as
    /// the shared cache vouches for the token: a keep-alive client sending the same token again skips the hash, the
    /// cache's lock and the route's checks. It holds the client's own `Authorization` value while the connection
    /// lives (the shared cache holds no token, only SHA-256 digests).
    struct TokenMemo {
        let authorization: String
        let route: RouteAuthorization
        let token: ValidatedToken
        let until: Double
    }

    var tokenMemo: TokenMemo?
    /// The rate-limit key of this connection's peer (`ip` keys of a direct client), built once.
    var ipKey: String?
}

extension RoutePolicy {
    /// Runs the policy for `context`. Synchronous answers change `context` in place; a suspension hands back a
    /// future whose resumption the caller applies.
    func evaluate(
        _ context: inout RequestContext, connection: inout ConnectionPolicyState, peer: HeaderHygiene.Peer, gateway: CompiledGateway, on eventLoop: any EventLoop
    ) -> PolicyVerdict {
        switch self {
        case .bearer(let auth):
            return Self.bearer(auth, &context, &connection, eventLoop)
        case .priority(let overrides):
            if let identity = context.identity, let priority = overrides.priority(for: identity) { context.priority = priority }
            return .proceed
        case .rateLimit(let limits):
            return limits.evaluate(&context, connection: &connection, peer: peer, gateway: gateway, now: context.receivedAt, on: eventLoop)
        case .admission(let admission):
            return Self.admit(admission, &context, eventLoop)
        case .circuitBreaker(let breaker):
            return breaker.evaluate(&context, now: context.receivedAt)
        }
    }

    /// Takes a slot of the cluster, or a place in its queue (the request suspends until a slot is granted, it is
    /// displaced, or it times out).
    private static func admit(_ admission: ClusterAdmission, _ context: inout RequestContext, _ eventLoop: any EventLoop) -> PolicyVerdict {
        switch admission.arrive(priority: context.priority, now: context.receivedAt, on: eventLoop) {
        case .admitted:
            context.admission = .holding(admission)
            context.admissionOutcome = .admitted
            return .proceed
        case .queued(let waiter, let ticket):
            context.admission = .queued(admission, waiter, ticket)
            context.admissionOutcome = .queued
            // A refusal after waiting leaves the body (if any) unread in the socket.
            let closes = RouteRateLimits.closesOnRefusal(context)
            return .suspend(
                waiter.promise.futureResult.map { resumption in
                    guard case .reject(var reply) = resumption else { return resumption }
                    reply.closesConnection = closes
                    return .reject(reply)
                }
            )
        case .refused:
            context.admissionOutcome = .shed
            return .reject(ClusterAdmission.overloaded(admission.clusterName, "its queue is full", closes: RouteRateLimits.closesOnRefusal(context)))
        }
    }

    /// The token check (behaviour as before the pipeline: the Python suites are its oracle).
    private static func bearer(
        _ auth: RouteAuthorization, _ context: inout RequestContext, _ connection: inout ConnectionPolicyState, _ eventLoop: any EventLoop
    ) -> PolicyVerdict {
        let scan = context.scan
        if let memo = connection.tokenMemo, memo.route === auth, scan.authorizationCount == 1, scan.authorization == memo.authorization,
            auth.validator.now() < memo.until
        {
            accept(memo.token, auth, &context)  // the same token as this connection's last request on this route, still vouched for
            context.trace?.tokenOutcome = .cacheHit  // tracing
            return .proceed
        }
        // A refused request whose body was not read cannot leave the connection usable.
        let close = !context.head.isKeepAlive || scan.requestsUpgrade || context.admitted.hasBody
        let presented: String
        switch BearerToken.extract(first: scan.authorization, count: scan.authorizationCount) {
        case .success(let value):
            presented = value
        case .failure(.missing):
            return .reject(auth.missingTokenReply.closing(close))
        case .failure(.malformed(let why)):
            return .reject(reply(.challenge(auth.challenge(.invalidRequest, why)), close: true))
        }
        let kind: TokenValidator.Kind
        switch auth.kind(of: presented) {
        case .success(let value): kind = value
        case .failure(let challenge): return .reject(reply(.challenge(challenge), close: close))
        }
        switch auth.validator.validate(presented, kind: kind, on: eventLoop, trace: context.trace?.request) {
        case .cached(let validated, let until):
            context.trace?.tokenOutcome = .cacheHit  // tracing
            switch authorize(.valid(validated), auth) {
            case .success(let validated):
                accept(validated, auth, &context)
                if let authorization = scan.authorization {
                    connection.tokenMemo = .init(authorization: authorization, route: auth, token: validated, until: until)
                }
                return .proceed
            case .failure(let failure):
                return .reject(reply(failure, close: close))
            }
        case .now(let outcome):
            switch authorize(outcome, auth) {
            case .success(let validated):
                accept(validated, auth, &context)
                return .proceed
            case .failure(let failure):
                return .reject(reply(failure, close: close))
            }
        case .later(let future):
            context.trace?.tokenOutcome = .exchange  // tracing
            // The body (if any) stays in the socket meanwhile, so a refusal then closes only when it was unread.
            let keepAlive = context.head.isKeepAlive && !scan.requestsUpgrade
            return .suspend(
                future.map { outcome in
                    switch authorize(outcome, auth) {
                    case .success(let validated): return .proceed(identity: validated)
                    case .failure(let failure): return .reject(reply(failure, close: !keepAlive))
                    }
                }
            )
        }
    }

    /// A token the route accepts: the request's identity, and the JWT the upstream receives.
    static func accept(_ token: ValidatedToken, _ auth: RouteAuthorization, _ context: inout RequestContext) {
        context.identity = token
        context.upstreamAdditions.append(auth.forwardHeader, auth.forwardValue(token))
    }

    enum AuthorizationFailure: Error {
        /// 401, 400 or 403 with `WWW-Authenticate`.
        case challenge(BearerChallenge)
        /// 503 with `Retry-After`: the token could not be checked (fail closed).
        case unavailable
        /// A reply the route built at load (`RouteAuthorization.refusal`).
        case prebuilt(GatewayReply)
    }

    /// Seconds a client is asked to wait when its token cannot be checked.
    static let retryAfterSeconds = "2"

    static func authorize(_ outcome: TokenValidator.Outcome, _ auth: RouteAuthorization) -> Result<ValidatedToken, AuthorizationFailure> {
        switch outcome {
        case .valid(let token):
            if let refusal = auth.refusal(token) { return .failure(.prebuilt(refusal.reply)) }
            return .success(token)
        case .invalid(let why):
            return .failure(.challenge(auth.challenge(.invalidToken, why)))
        case .unavailable:
            return .failure(.unavailable)
        }
    }

    /// RFC 6750 §3: the challenge in `WWW-Authenticate`, the same error in the JSON body with the request id.
    static func reply(_ failure: AuthorizationFailure, close: Bool) -> GatewayReply {
        switch failure {
        case .challenge(let challenge):
            return GatewayReply(
                HTTPResponseStatus(statusCode: challenge.status), challenge.description ?? "a bearer token is required",
                error: challenge.error?.rawValue ?? "unauthorized", closes: close, cause: .rejected(by: .bearer),
                headers: [("WWW-Authenticate", challenge.headerValue)]
            )
        case .unavailable:
            return authorizationServerUnreachable.closing(close)
        case .prebuilt(let reply):
            return reply.closing(close)
        }
    }

    /// The fail-closed 503 when the authorization server cannot be reached (built once).
    static let authorizationServerUnreachable = unavailable("the token cannot be checked now (the authorization server is unreachable); retry later", close: true)

    /// 503 `temporarily_unavailable` with `Retry-After`: the token could not be checked (fail closed).
    static func unavailable(_ message: String, close: Bool) -> GatewayReply {
        GatewayReply(
            .serviceUnavailable, message, error: "temporarily_unavailable", closes: close, cause: .rejected(by: .bearer),
            headers: [("Retry-After", retryAfterSeconds)]
        )
    }
}

/// A route's policies in order, compiled with the route.
struct PolicyChain: Sendable {
    let policies: [RoutePolicy]

    static let empty = PolicyChain(policies: [])
}

/// A route's `priority_overrides`, compiled: the first whose conditions all hold gives the request's class.
struct PriorityOverrides: Sendable {
    struct Override: Sendable {
        let clientIDs: Set<String>
        let scopesAnyOf: Set<String>
        let priority: PriorityClass
    }

    let overrides: [Override]

    func priority(for identity: ValidatedToken) -> PriorityClass? {
        for override in overrides {
            if !override.clientIDs.isEmpty {
                guard let client = identity.clientID, override.clientIDs.contains(client) else { continue }
            }
            if !override.scopesAnyOf.isEmpty && override.scopesAnyOf.isDisjoint(with: identity.scopes) { continue }
            return override.priority
        }
        return nil
    }
}

