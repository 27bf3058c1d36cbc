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
    /// With `scope: cluster`: the Redis-backed decisions (and `limiter` is unused: the fallback has its own share).
    let cluster: ClusterRateLimit?
    /// The definition it was compiled from: a reload keeps the limiter (and its counts) while this is unchanged.
    let definition: GatewayConfiguration.RateLimit
    /// This limit's item of `RateLimit-Policy` (`"name";q=20;w=1`), built once.
    let policyItem: String
    /// The start of its `RateLimit` item (`"name";r=`), built once: a response's value is this, the remaining
    /// quota and `;t=` with the seconds until reset.
    let limitItemPrefix: String

    init(_ definition: GatewayConfiguration.RateLimit, limiter: RateLimiter, cluster: ClusterRateLimit? = nil) {
        self.name = definition.name
        self.keyParts = definition.key
        self.limiter = limiter
        self.cluster = cluster
        self.definition = definition
        self.policyItem = RateLimitHeaders.policy(limiter.rule)
        let item = RateLimitHeaders.rateLimit(name: definition.name, decision: .allow(remaining: 0, resetAfter: 0))
        self.limitItemPrefix = String(item.prefix(item.count - "0;t=0".count))
    }

    /// `RateLimit`'s item for an allowed or delayed request (the same as `RateLimitHeaders.rateLimit`, from the
    /// prebuilt prefix: formatting the quoted name per response cost about 0.3 µs).
    func limitItem(remaining: Int, resetAfter: UInt64) -> String {
        let seconds = resetAfter / 1_000_000_000 + (resetAfter % 1_000_000_000 == 0 ? 0 : 1)
        return limitItemPrefix + String(max(0, remaining)) + ";t=" + String(seconds)
    }

    /// Requests allowed, limited and delayed, by Redis and locally (the fallback's share, for a cluster limit).
    func stats() -> RateLimitStats {
        var stats = cluster?.fallbackLimiter.stats() ?? limiter.stats()
        if let counts = cluster?.snapshot {
            let (allowed, limited, delayed) = (counts.allowed, counts.limited, counts.delayed)
            stats.allowed += allowed
            stats.limited += limited
            stats.delayed += delayed
        }
        return stats
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

    /// Decides for one request. `now` is the request's receive time (the pipeline's one clock read). Local limits
    /// answer at once; a `scope: cluster` limit asks Redis, and the request (not the loop) is suspended until every
    /// such answer is in, then concluded on its own loop with the same headers and 429 as a local refusal.
    func evaluate(
        _ context: inout RequestContext, connection: inout ConnectionPolicyState, peer: HeaderHygiene.Peer, gateway: CompiledGateway, now: NIODeadline,
        on eventLoop: any EventLoop
    ) -> PolicyVerdict {
        let nanoseconds = now.uptimeNanoseconds
        var tally = Tally()
        var pending: [(index: Int, future: EventLoopFuture<RateLimitDecision>)] = []
        for index in limits.indices {
            let limit = limits[index]
            let key = Self.key(limit.keyParts, context: context, connection: &connection, peer: peer, gateway: gateway)
            let decision: RateLimitDecision
            if let cluster = limit.cluster {
                switch cluster.decide(key, now: nanoseconds, on: eventLoop) {
                case .now(let local):
                    decision = local
                case .later(let future):
                    pending.append((index, future))
                    continue
                }
            } else {
                decision = limit.limiter.decide(key, now: nanoseconds)
            }
            tally.add(index, decision)
            if tally.refusal != nil { break }
        }
        if pending.isEmpty || tally.refusal != nil {
            let resolution = conclude(tally, closes: Self.closesOnRefusal(context))
            resolution.apply(to: &context)
            if let reply = resolution.reply { return .reject(reply) }
            guard resolution.delay > 0 else { return .proceed }
            return .suspend(Self.delayed(.proceed(identity: nil), by: resolution.delay, on: eventLoop))
        }
        let closes = Self.closesOnRefusal(context)
        let decided: EventLoopFuture<Tally>
        let sofar = tally
        if pending.count == 1 {
            let (index, future) = pending[0]
            decided = future.map { decision in
                var result = sofar
                result.add(index, decision)
                return result
            }
        } else {
            let indices = pending.map { $0.index }
            decided = EventLoopFuture.whenAllSucceed(pending.map { $0.future }, on: eventLoop).map { decisions in
                var result = sofar
                for (index, decision) in zip(indices, decisions) where result.refusal == nil { result.add(index, decision) }
                return result
            }
        }
        return .suspend(
            decided.flatMap { [self] tally in
                let resolution = conclude(tally, closes: closes)
                guard resolution.reply == nil, resolution.delay > 0 else { return eventLoop.makeSucceededFuture(.rateLimit(resolution)) }
                return Self.delayed(.rateLimit(resolution), by: resolution.delay, on: eventLoop)
            }
        )
    }

    /// The decisions of a request's limits so far: the first refusal, or the longest delay and the most constrained
    /// allowing limit (fewest remaining, for the `RateLimit` header).
    struct Tally {
        var tightest = -1
        var tightestRemaining = Int.max
        var tightestReset: UInt64 = 0
        var delay: UInt64 = 0
        var refusal: (index: Int, decision: RateLimitDecision)?

        mutating func add(_ index: Int, _ decision: RateLimitDecision) {
            switch decision {
            case .allow(let remaining, let resetAfter):
                if remaining < tightestRemaining { (tightest, tightestRemaining, tightestReset) = (index, remaining, resetAfter) }
            case .delay(let wait, let remaining, let resetAfter):
                delay = max(delay, wait)
                if remaining < tightestRemaining { (tightest, tightestRemaining, tightestReset) = (index, remaining, resetAfter) }
            case .refuse:
                if refusal == nil { refusal = (index, decision) }
            }
        }
    }

    /// What the limits' decisions do to the request: its headers, its outcome, and a 429 or a delay.
    func conclude(_ tally: Tally, closes: Bool) -> RateLimitResolution {
        if let refusal = tally.refusal, case .refuse(let retryAfter, _) = refusal.decision {
            let decision = refusal.decision
            let limit = limits[refusal.index]
            let seconds = RateLimiter.retryAfterSeconds(retryAfter)
            return RateLimitResolution(
                outcome: .limited, limitedBy: limit.name, policyHeader: nil, limitHeader: nil, delay: 0,
                reply: GatewayReply(
                    .tooManyRequests, "rate limit '\(limit.name)' exceeded; retry after \(seconds) s", error: "rate_limited",
                    closes: closes, cause: .rejected(by: .rateLimit),
                    headers: [
                        ("Retry-After", String(seconds)),
                        ("RateLimit-Policy", policyHeader),
                        ("RateLimit", RateLimitHeaders.rateLimit(name: limit.name, decision: decision)),
                    ]
                )
            )
        }
        let limitHeader = tally.tightest >= 0 ? limits[tally.tightest].limitItem(remaining: tally.tightestRemaining, resetAfter: tally.tightestReset) : nil
        // Shaping: the request waits its turn (the limiter has already counted it at its turn's time).
        return RateLimitResolution(
            outcome: tally.delay > 0 ? .delayed : .allowed, limitedBy: nil, policyHeader: policyHeader, limitHeader: limitHeader, delay: tally.delay,
            reply: nil
        )
    }

    private static func delayed(_ resumption: PolicyResumption, by delay: UInt64, on eventLoop: any EventLoop) -> EventLoopFuture<PolicyResumption> {
        let promise = eventLoop.makePromise(of: PolicyResumption.self)
        eventLoop.scheduleTask(in: .nanoseconds(Int64(delay))) { promise.succeed(resumption) }
        return promise.futureResult
    }

    /// A refused request whose body was not read cannot leave the connection usable.
    static func closesOnRefusal(_ context: borrowing RequestContext) -> Bool {
        !context.head.isKeepAlive || context.scan.requestsUpgrade || context.admitted.hasBody
    }

    /// The request's key for a limit: the parts joined by a separator no header value can hold, each tagged by its
    /// kind (a `client_id` that happens to read like an address never shares a bucket with that address). A part
    /// the request lacks (no token, no such header) makes the whole key the client's address: a client cannot
    /// escape a per-client limit by leaving its credential out.
    static func key(
        _ parts: [GatewayConfiguration.RateLimit.KeyPart], context: borrowing RequestContext, connection: inout ConnectionPolicyState, peer: HeaderHygiene.Peer,
        gateway: CompiledGateway
    ) -> String {
        if parts.count == 1, let single = part(parts[0], context: context, connection: &connection, peer: peer, gateway: gateway) { return single }
        var key = ""
        for kind in parts {
            guard let value = part(kind, context: context, connection: &connection, peer: peer, gateway: gateway) else {
                return ipKey(context: context, connection: &connection, peer: peer, gateway: gateway)
            }
            if !key.isEmpty { key += "\u{1F}" }
            key += value
        }
        return key
    }

    private static func part(
        _ kind: GatewayConfiguration.RateLimit.KeyPart, context: borrowing RequestContext, connection: inout ConnectionPolicyState, peer: HeaderHygiene.Peer,
        gateway: CompiledGateway
    ) -> String? {
        switch kind {
        case .clientID:
            guard let id = context.identity?.clientID else { return nil }
            return "c\u{1}" + id
        case .subject:
            guard let subject = context.identity?.subject else { return nil }
            return "s\u{1}" + subject
        case .ip:
            return ipKey(context: context, connection: &connection, peer: peer, gateway: gateway)
        case .route:
            return "r\u{1}"
        case .header(let name):
            guard let value = context.head.headers.first(name: name), !value.isEmpty else { return nil }
            return "h\u{1}" + value
        }
    }

    /// The `ip` key. A direct client's is the same for every request of its connection, so it is built once per
    /// connection (an allocation and a concatenation per request otherwise); a trusted proxy's depends on each
    /// request's `X-Forwarded-For`.
    private static func ipKey(context: borrowing RequestContext, connection: inout ConnectionPolicyState, peer: HeaderHygiene.Peer, gateway: CompiledGateway) -> String {
        if peer.isTrustedProxy { return "i\u{1}" + clientAddress(context: context, peer: peer, gateway: gateway) }
        if let cached = connection.ipKey { return cached }
        let key = "i\u{1}" + peer.address
        connection.ipKey = key
        return key
    }

    /// The client's address: the socket peer, or — when the peer is a trusted proxy — the nearest address in
    /// `X-Forwarded-For` that is not itself a trusted proxy (read right to left: every hop appends, and only the
    /// hops the gateway trusts vouch for what is on their left).
    static func clientAddress(context: borrowing RequestContext, peer: HeaderHygiene.Peer, gateway: CompiledGateway) -> String {
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

/// A rate-limit policy's conclusion for one request, applied to its context when the policy answers (at once, or
/// on resuming after Redis answered).
struct RateLimitResolution {
    let outcome: LimitOutcome
    let limitedBy: String?
    /// `RateLimit-Policy` and `RateLimit` for the response of a request let through.
    let policyHeader: String?
    let limitHeader: String?
    /// ns to hold the request before it goes on (shaping), 0 for none.
    let delay: UInt64
    /// The 429 when a limit refused.
    let reply: GatewayReply?

    func apply(to context: inout RequestContext) {
        context.limitOutcome = outcome
        if let limitedBy { context.limitedBy = limitedBy }
        if let policyHeader { context.responseAdditions.append("RateLimit-Policy", policyHeader) }
        if let limitHeader { context.responseAdditions.append("RateLimit", limitHeader) }
    }
}
