import GatehouseConfiguration
import GatehousePolicies
import GatehouseRedis
import Logging
import NIOCore
import Synchronization

/// A `scope: cluster` limit's decisions: one `EVALSHA` of `GCRAScript` per request through the `RedisClient`
/// (every gateway sees the same counts, Redis's clock for all), or — while Redis fails — the local limiter at this
/// gateway's share (`ClusterFallback`).
///
/// The request is suspended, not the loop, while Redis answers: `decide` hands back a future that always succeeds (a
/// Redis failure becomes a local decision), completed on the request's loop — the command goes out on that loop's
/// own Redis connection, so neither the command nor its reply crosses threads.
final class ClusterRateLimit: Sendable {
    let redis: RedisClient
    /// `gatehouse:rl:<route>:<limit>:` — the key's prefix in Redis, the same on every gateway with this route.
    let keyPrefix: String
    /// The GCRA's parameters in the script's units (µs). T is rounded up: a rate that does not divide a second
    /// (7/s) is enforced a hair below its value (≤ 1 µs per request), never above.
    let emissionIntervalMicros: Int64
    let burst: Int
    let maxDelayMicros: Int64
    /// The script's call with these parameters, encoded once (a decision writes only its key).
    let call: GCRACall
    /// This gateway's share of the limit (`rate / cluster_instances`, `burst / cluster_instances`), used while
    /// falling back.
    let fallbackLimiter: RateLimiter
    let instances: Int
    private let state: Mutex<ClusterFallback>
    private let fallingBack = Atomic<Bool>(false)
    private let allowedByRedis = Atomic<Int>(0)
    private let limitedByRedis = Atomic<Int>(0)
    private let delayedByRedis = Atomic<Int>(0)
    private let logger: Logger
    private let routeName: String
    private let limitName: String

    init(route: String, definition: GatewayConfiguration.RateLimit, rule: RateLimitRule, redis: RedisClient, logger: Logger, probeInterval: UInt64 = 1_000_000_000) {
        self.redis = redis
        self.routeName = route
        self.limitName = definition.name
        self.keyPrefix = "gatehouse:rl:\(route):\(definition.name):"
        let unitMicros = Int64(definition.perSeconds) * 1_000_000
        self.emissionIntervalMicros = max(1, (unitMicros + Int64(definition.rate) - 1) / Int64(definition.rate))
        self.burst = definition.burst
        self.maxDelayMicros = Int64(definition.maxDelayMilliseconds) * 1000
        self.call = GCRACall(keyPrefix: keyPrefix, emissionIntervalMicros: emissionIntervalMicros, burst: burst, maxDelayMicros: maxDelayMicros)
        self.instances = definition.clusterInstances
        self.fallbackLimiter = RateLimiter(rule: rule.share(of: definition.clusterInstances))
        self.state = Mutex(ClusterFallback(probeInterval: probeInterval))
        self.logger = logger
    }

    /// A decision now (local, while falling back) or later (Redis's).
    enum Pending {
        case now(RateLimitDecision)
        case later(EventLoopFuture<RateLimitDecision>)
    }

    /// Whether decisions are local now (the `gatehouse_gateway_rate_limit_fallback` gauge).
    var isFallingBack: Bool { fallingBack.load(ordering: .relaxed) }

    /// Times this limit fell back, decisions Redis took (allowed, limited, delayed).
    var snapshot: (fallbacks: Int, allowed: Int, limited: Int, delayed: Int) {
        (
            state.withLock { $0.fallbacks }, allowedByRedis.load(ordering: .relaxed), limitedByRedis.load(ordering: .relaxed),
            delayedByRedis.load(ordering: .relaxed)
        )
    }

    /// Decides one request of `key`. `now`: the request's receive time (ns, monotonic) for the local limiter and the
    /// probe schedule; Redis uses its own clock.
    func decide(_ key: String, now: UInt64, on eventLoop: any EventLoop) -> Pending {
        // While on Redis (the flag is false) the state machine would answer `.redis` without changing: skip its lock.
        // The flag trails a transition by the few decisions taken meanwhile, which go to Redis (and fall back
        // themselves) or take the lock and are routed by the machine.
        if fallingBack.load(ordering: .relaxed) {
            switch state.withLock({ $0.route(now: now) }) {
            case .redis:
                break
            case .local:
                return .now(fallbackLimiter.decide(key, now: now))
            case .localAndProbe:
                probe()
                return .now(fallbackLimiter.decide(key, now: now))
            }
        }
        // Sent on a connection of the request's own loop and answered there: no hop either way, one promise.
        let promise = eventLoop.makePromise(of: RateLimitDecision.self)
        redis.gcra(call, key: key, on: eventLoop) { [self] result in
            switch result {
            case .success(let decision):
                count(decision)
                promise.succeed(Self.decision(decision))
            case .failure(let error as RedisError) where error.isWaitingToReconnect:
                // This loop's connection is still in its reconnect backoff (at most `reconnect_backoff_maximum`, 2 s)
                // while another loop's probe found Redis back: no news about Redis, so no transition (falling back
                // again here made the log and the gauge flap after every outage). Decided locally until it reconnects.
                promise.succeed(fallbackLimiter.decide(key, now: NIODeadline.now().uptimeNanoseconds))
            case .failure(let error):
                // Not answered in time, or not at all: this request, and those after it, are decided here.
                report(transition { $0.redisFailed(now: NIODeadline.now().uptimeNanoseconds) }, error: error)
                promise.succeed(fallbackLimiter.decide(key, now: NIODeadline.now().uptimeNanoseconds))
            }
        }
        return .later(promise.futureResult)
    }

    /// One `PING` beside a local decision; its answer decides whether Redis is back.
    private func probe() {
        redis.send(["PING"]).whenComplete { [self] result in
            let now = NIODeadline.now().uptimeNanoseconds
            switch result {
            case .success:
                report(transition { $0.redisAnswered(now: now, probe: true) }, error: nil)
            case .failure(let error):
                report(transition { $0.redisFailed(now: now, probe: true) }, error: error)
            }
        }
    }

    /// Runs an event through the state machine and sets the fast path's flag under the same lock: stored after the
    /// lock, a `.recovered` and a `.fellBack` computed one after the other could land in the opposite order and
    /// leave the machine falling back with the flag saying Redis, so that no decision would ever probe again.
    private func transition(_ event: (inout ClusterFallback) -> ClusterFallback.Transition?) -> ClusterFallback.Transition? {
        state.withLock { machine in
            let transition = event(&machine)
            switch transition {
            case .fellBack: fallingBack.store(true, ordering: .relaxed)
            case .recovered: fallingBack.store(false, ordering: .relaxed)
            case nil: break
            }
            return transition
        }
    }

    private func report(_ transition: ClusterFallback.Transition?, error: (any Error)?) {
        guard let transition else { return }
        switch transition {
        case .fellBack:
            let rule = fallbackLimiter.rule
            logger.warning(
                "cluster rate limit falling back to the local limiter: Redis is unreachable or slower than its timeout",
                metadata: [
                    "route": "\(routeName)", "limit": "\(limitName)", "redis": "\(redis.configuration)", "error": "\(error.map { "\($0)" } ?? "-")",
                    "local_rate": "\(rule.rate) per \(rule.unit / 1_000_000_000) s", "local_burst": "\(rule.burst)", "cluster_instances": "\(instances)",
                ]
            )
        case .recovered:
            logger.notice(
                "cluster rate limit back on Redis", metadata: ["route": "\(routeName)", "limit": "\(limitName)", "redis": "\(redis.configuration)"]
            )
        }
    }

    private func count(_ decision: ClusterRateLimitDecision) {
        switch decision.outcome {
        case .allow: allowedByRedis.add(1, ordering: .relaxed)
        case .delay: delayedByRedis.add(1, ordering: .relaxed)
        case .refuse: limitedByRedis.add(1, ordering: .relaxed)
        }
    }

    /// The script's answer as the local limiter's decision (µs → ns), so both answer with the same headers.
    static func decision(_ decision: ClusterRateLimitDecision) -> RateLimitDecision {
        let reset = UInt64(max(0, decision.resetAfterMicros)) * 1000
        switch decision.outcome {
        case .allow:
            return .allow(remaining: decision.remaining, resetAfter: reset)
        case .delay(let micros):
            return .delay(UInt64(max(0, micros)) * 1000, remaining: decision.remaining, resetAfter: reset)
        case .refuse(let micros):
            return .refuse(retryAfter: UInt64(max(0, micros)) * 1000, resetAfter: reset)
        }
    }
}
