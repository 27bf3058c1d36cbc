import GatehouseConfiguration
import GatehousePolicies
import NIOCore
import NIOHTTP1

/// A route's circuit breaker (`circuit_breaker`), shared by every event loop: asked before a request goes upstream
/// (`evaluate`), told the result of every try (`record`, from the attempt hooks). It never imposes a deadline of its
/// own — timeouts come only from the route's `timeouts` (Spring Cloud Gateway's breaker adds a hidden 1 s one).
final class RouteCircuitBreaker: Sendable {
    let routeName: String
    let breaker: SharedCircuitBreaker
    /// The definition it was compiled from: a reload keeps the breaker (and its window) while this is unchanged.
    let definition: GatewayConfiguration.CircuitBreaker
    /// Statuses that count as failed tries, indexed by status (100…599).
    private let failureStatuses: [Bool]
    /// The fallback's head fields and body, built once.
    let fallback: GatewayReply.Fixed?

    init(routeName: String, definition: GatewayConfiguration.CircuitBreaker, breaker: SharedCircuitBreaker) {
        self.routeName = routeName
        self.definition = definition
        self.breaker = breaker
        var statuses = [Bool](repeating: false, count: 600)
        for status in definition.failureStatuses where status < 600 { statuses[status] = true }
        self.failureStatuses = statuses
        self.fallback = definition.fallback.map {
            GatewayReply.Fixed(status: HTTPResponseStatus(statusCode: $0.status), contentType: $0.contentType, body: $0.body)
        }
    }

    static func settings(_ definition: GatewayConfiguration.CircuitBreaker) -> CircuitBreakerSettings {
        var settings = CircuitBreakerSettings()
        settings.window = UInt64(definition.windowMilliseconds) * 1_000_000
        settings.buckets = definition.buckets
        settings.minRequests = definition.minRequests
        settings.errorRate = definition.errorRate
        if let slow = definition.slowCallMilliseconds {
            settings.slowCall = .init(duration: UInt64(slow) * 1_000_000, rate: definition.slowCallRate)
        }
        settings.openFor = UInt64(definition.openForMilliseconds) * 1_000_000
        settings.maxOpenFor = UInt64(definition.maxOpenForMilliseconds) * 1_000_000
        settings.halfOpenRequests = definition.halfOpenRequests
        return settings
    }

    /// Lets the request through (as a trial when half-open) or answers it at once without touching the upstream:
    /// 503 `circuit_open` with `Retry-After` (seconds until half-open), or the route's fallback.
    func evaluate(_ context: inout RequestContext, now: NIODeadline) -> PolicyVerdict {
        switch breaker.admit(now: now.uptimeNanoseconds) {
        case .allow(let ticket):
            context.breakerOutcome = .closed
            context.breakerTicket = ticket
            return .proceed
        case .allowTrial(let ticket):
            context.breakerOutcome = .trial
            context.breakerTicket = ticket
            return .proceed
        case .refuse(let retryAfter):
            context.breakerOutcome = .open
            let seconds = RateLimiter.retryAfterSeconds(retryAfter)
            let closes = RouteRateLimits.closesOnRefusal(context)
            if let fallback {
                var reply = GatewayReply(fallback.status, "circuit open (fallback)", error: "circuit_open", closes: closes, cause: .rejected(by: .circuitBreaker))
                reply.fixed = fallback
                return .reject(reply)
            }
            return .reject(
                GatewayReply(
                    .serviceUnavailable, "the route '\(routeName)' is failing; its circuit breaker is open", error: "circuit_open", closes: closes,
                    cause: .rejected(by: .circuitBreaker), headers: [("Retry-After", String(seconds))]
                )
            )
        }
    }

    /// How a try of a request admitted with `ticket` ended, as the breaker counts it (`status` nil: a connect
    /// failure, a reset or a timeout).
    func record(status: UInt?, duration: UInt64, ticket: BreakerTicket, now: NIODeadline) {
        let failed: Bool
        if let status {
            failed = status < 600 && failureStatuses[Int(status)]
        } else {
            failed = true
        }
        breaker.record(failed ? .failure : .success(duration: duration), ticket: ticket, now: now.uptimeNanoseconds)
    }

    /// A request admitted with `ticket` ended with no verdict on the upstream (its client left, a later policy
    /// refused it): a half-open trial slot is given back.
    func cancel(_ ticket: BreakerTicket, now: NIODeadline) {
        breaker.record(.cancelled, ticket: ticket, now: now.uptimeNanoseconds)
    }
}
