import GatehouseConfiguration
import GatehousePolicies
import NIOCore
import NIOHTTP1

/// One compiled `rate_limits[]` entry: its GCRA limiter (shared by every event loop; exact under concurrency, see
/// `RateLimiter`) and how its key is built.
final class CompiledRateLimit: Sendable {
    let name: String
    let keyParts: [GatewayConfiguration.RateLimit.KeyPart]
    let limiter: RateLimiter
    /// The definition it was compiled from: a reload keeps the limiter (and its counts) while this is unchanged.
    let definition: GatewayConfiguration.RateLimit
    /// This limit's item of `RateLimit-Policy` (`"name";q=20;w=1`), built once.
    let policyItem: String

    init(_ definition: GatewayConfiguration.RateLimit, limiter: RateLimiter) {
        self.name = definition.name
        self.keyParts = definition.key
        self.limiter = limiter
        self.definition = definition
        self.policyItem = RateLimitHeaders.policy(limiter.rule)
    }

    static func rule(_ definition: GatewayConfiguration.RateLimit) -> RateLimitRule {
        RateLimitRule(
            name: definition.name, rate: definition.rate, per: UInt64(definition.perSeconds) * 1_000_000_000, burst: definition.burst,
            maxDelay: UInt64(definition.maxDelayMilliseconds) * 1_000_000
        )
    }
}

/// A route's rate limits (`rate_limits`), run as one policy after the token check (so that `client_id` and `sub`
/// keys are known). Every limit must allow the request; each counts it.
///
/// A request refused by a later limit has still been counted by the earlier ones that allowed it (as in Envoy and
/// Kong): the bound "at most burst + rate × T allowed" holds for each limit whatever the others do, and the
/// alternative — reserving and then returning tokens — would make every decision two round trips to the shared
/// state.
final class RouteRateLimits: Sendable {
    let limits: [CompiledRateLimit]
    /// `RateLimit-Policy` for every response of the route (all its limits), built once.
    let policyHeader: String

    init(_ limits: [CompiledRateLimit]) {
        self.limits = limits
        self.policyHeader = limits.map(\.policyItem).joined(separator: ", ")
    }

    /// Decides for one request. `now` is the request's receive time (the pipeline's one clock read).
    func evaluate(_ context: inout RequestContext, peer: HeaderHygiene.Peer, gateway: CompiledGateway, now: NIODeadline, on eventLoop: any EventLoop) -> PolicyVerdict {
        let nanoseconds = now.uptimeNanoseconds
        // The most constrained allowing limit (fewest remaining), for the `RateLimit` header.
        var tightest: (name: String, decision: RateLimitDecision, remaining: Int)?
        var delay: UInt64 = 0
        for limit in limits {
            let key = Self.key(limit.keyParts, context: context, peer: peer, gateway: gateway)
            let decision = limit.limiter.decide(key, now: nanoseconds)
            switch decision {
            case .allow(let remaining, _):
                if tightest == nil || remaining < tightest!.remaining { tightest = (limit.name, decision, remaining) }
            case .delay(let wait, let remaining, _):
                delay = max(delay, wait)
                if tightest == nil || remaining < tightest!.remaining { tightest = (limit.name, decision, remaining) }
            case .refuse(let retryAfter, _):
                let seconds = RateLimiter.retryAfterSeconds(retryAfter)
                context.limitOutcome = .limited
                context.limitedBy = limit.name
                return .reject(
                    GatewayReply(
                        .tooManyRequests, "rate limit '\(limit.name)' exceeded; retry after \(seconds) s", error: "rate_limited",
                        closes: Self.closesOnRefusal(context), cause: .rejected(by: .rateLimit),
                        headers: [
                            ("Retry-After", String(seconds)),
                            ("RateLimit-Policy", policyHeader),
                            ("RateLimit", RateLimitHeaders.rateLimit(name: limit.name, decision: decision)),
                        ]
                    )
                )
            }
        }
        context.responseAdditions.append("RateLimit-Policy", policyHeader)
        if let tightest {
            context.responseAdditions.append("RateLimit", RateLimitHeaders.rateLimit(name: tightest.name, decision: tightest.decision))
        }
        guard delay > 0 else {
            context.limitOutcome = .allowed
            return .proceed
        }
        // Shaping: the request waits its turn (the limiter has already counted it at its turn's time).
        context.limitOutcome = .delayed
        let resumption = eventLoop.makePromise(of: PolicyResumption.self)
        eventLoop.scheduleTask(in: .nanoseconds(Int64(delay))) { resumption.succeed(.proceed(identity: nil)) }
        return .suspend(resumption.futureResult)
    }

    /// A refused request whose body was not read cannot leave the connection usable.
    static func closesOnRefusal(_ context: RequestContext) -> Bool {
        !context.head.isKeepAlive || context.scan.requestsUpgrade || context.admitted.hasBody
    }

    /// The request's key for a limit: the parts joined by a separator no header value can hold, each tagged by its
    /// kind (a `client_id` that happens to read like an address never shares a bucket with that address). A part
    /// the request lacks (no token, no such header) makes the whole key the client's address: a client cannot
    /// escape a per-client limit by leaving its credential out.
    static func key(_ parts: [GatewayConfiguration.RateLimit.KeyPart], context: RequestContext, peer: HeaderHygiene.Peer, gateway: CompiledGateway) -> String {
        if parts.count == 1, let single = part(parts[0], context: context, peer: peer, gateway: gateway) { return single }
        var key = ""
        for kind in parts {
            guard let value = part(kind, context: context, peer: peer, gateway: gateway) else {
                return "i\u{1}" + clientAddress(context: context, peer: peer, gateway: gateway)
            }
            if !key.isEmpty { key += "\u{1F}" }
            key += value
        }
        return key
    }

    private static func part(_ kind: GatewayConfiguration.RateLimit.KeyPart, context: RequestContext, peer: HeaderHygiene.Peer, gateway: CompiledGateway) -> String? {
        switch kind {
        case .clientID:
            guard let id = context.identity?.clientID else { return nil }
            return "c\u{1}" + id
        case .subject:
            guard let subject = context.identity?.subject else { return nil }
            return "s\u{1}" + subject
        case .ip:
            return "i\u{1}" + clientAddress(context: context, peer: peer, gateway: gateway)
        case .route:
            return "r\u{1}"
        case .header(let name):
            guard let value = context.head.headers.first(name: name), !value.isEmpty else { return nil }
            return "h\u{1}" + value
        }
    }

    /// The client's address: the socket peer, or — when the peer is a trusted proxy — the nearest address in
    /// `X-Forwarded-For` that is not itself a trusted proxy (read right to left: every hop appends, and only the
    /// hops the gateway trusts vouch for what is on their left).
    static func clientAddress(context: RequestContext, peer: HeaderHygiene.Peer, gateway: CompiledGateway) -> String {
        guard peer.isTrustedProxy else { return peer.address }
        var candidate = peer.address
        for value in context.head.headers[canonicalForm: "X-Forwarded-For"].reversed() {
            let text = String(value).trimmingSpacesAndTabs()
            guard let bytes = GatewayConfiguration.CIDR.parseAddress(text) else { return candidate }
            candidate = GatewayConfiguration.CIDR.canonicalText(bytes)
            if !gateway.isTrusted(bytes) { return candidate }
        }
        return candidate
    }
}

extension String {
    fileprivate func trimmingSpacesAndTabs() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return String(slice)
    }
}
