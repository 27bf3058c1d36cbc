/// Where a cluster-wide (`scope: cluster`) limit takes its decisions: from Redis, or — while Redis is unreachable or
/// slower than its `timeout` — from a local limiter holding this gateway's share of the limit. A pure state machine
/// with an injected clock (ns, monotonic); the gateway keeps one per limit behind a lock and runs the I/O it asks for.
///
/// **Rule.** A Redis failure (timeout, refused or closed connection) on any decision switches to `fallback`; the
/// request that saw it, and every request after it, is decided locally at `rate / cluster_instances` and
/// `burst / cluster_instances` — neither fail-open nor 5xx. While falling back, no request waits on Redis: at most
/// one *probe* per `probeInterval` is sent beside the local decision, and the first probe Redis answers switches back.
/// Each switch is reported once (the caller logs it), so an outage is two log lines, not one per request.
///
/// **Bound while falling back.** With N gateways each enforcing rate/N and burst/N locally, the cluster admits at
/// most burst + rate·L over L seconds, as with Redis, if the traffic is spread over the N gateways, and less if it is
/// not (a gateway cannot lend its unused share to another); with fewer live gateways than `cluster_instances`, the
/// cluster admits proportionally less — never more.
public struct ClusterFallback: Sendable, Equatable {
    /// Where decisions come from.
    public enum Mode: Sendable, Equatable {
        case redis
        case fallback
    }

    /// What to do for one decision.
    public enum Route: Sendable, Equatable {
        /// Ask Redis.
        case redis
        /// Decide locally.
        case local
        /// Decide locally, and send one probe to Redis beside it (the caller reports its result).
        case localAndProbe
    }

    /// A change of mode, for the caller to log (once) and export.
    public enum Transition: Sendable, Equatable {
        /// Redis stopped answering: decisions are local from now on.
        case fellBack
        /// Redis answered a probe: decisions come from Redis again.
        case recovered
    }

    public private(set) var mode: Mode = .redis
    /// Times this limit has fallen back since it was created.
    public private(set) var fallbacks = 0
    /// Nanoseconds between probes while falling back.
    public let probeInterval: UInt64
    private var nextProbeAt: UInt64 = 0
    private var probeInFlight = false

    /// - Parameter probeInterval: ns between two probes while falling back (default 1 s: Redis restarted is noticed
    ///   within a second, and a dead Redis costs one failed command per second per limit).
    public init(probeInterval: UInt64 = 1_000_000_000) {
        self.probeInterval = max(1, probeInterval)
    }

    /// Where the decision at `now` comes from.
    public mutating func route(now: UInt64) -> Route {
        switch mode {
        case .redis:
            return .redis
        case .fallback:
            guard !probeInFlight, now >= nextProbeAt else { return .local }
            probeInFlight = true
            nextProbeAt = now &+ probeInterval
            return .localAndProbe
        }
    }

    /// A decision or probe Redis failed (timed out, could not be sent, connection closed) at `now`.
    public mutating func redisFailed(now: UInt64, probe: Bool = false) -> Transition? {
        if probe { probeInFlight = false }
        guard mode == .redis else { return nil }
        mode = .fallback
        fallbacks += 1
        probeInFlight = false
        nextProbeAt = now &+ probeInterval
        return .fellBack
    }

    /// Redis answered a probe (or a decision) at `now`.
    public mutating func redisAnswered(now: UInt64, probe: Bool = false) -> Transition? {
        if probe { probeInFlight = false }
        // A decision sent before the outage and answered late says nothing about now; only a probe brings back Redis.
        guard mode == .fallback, probe else { return nil }
        mode = .redis
        return .recovered
    }
}

extension RateLimitRule {
    /// This gateway's share of a cluster-wide rule while Redis is unreachable: `rate / instances` per unit, exactly
    /// (as `rate` per `instances` units, so 100/s over 3 gateways is 100 per 3 s, not 33/s), and `burst / instances`
    /// rounded down, at least 1.
    public func share(of instances: Int) -> RateLimitRule {
        let count = UInt64(max(1, instances))
        let (unit, overflow) = self.unit.multipliedReportingOverflow(by: count)
        return RateLimitRule(name: name, rate: rate, per: overflow ? UInt64.max : unit, burst: max(1, burst / Int(count)), maxDelay: maxDelay)
    }
}
