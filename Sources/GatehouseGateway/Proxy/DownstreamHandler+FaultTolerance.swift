import NIOCore
import NIOHTTP1

/// The fault-tolerance policies' part of an exchange's end: a try cut by a timeout counts against the breaker, a
/// suspension that outlives the total timeout is answered by its kind, and the admission slot or queue place is
/// given back at the one exit.
extension DownstreamHandler {
    /// A try that the per-try or total timeout ended: a failure for the circuit breaker (outlier detection counts
    /// only refused connections, resets and 5xx, as before).
    func attemptTimedOut(_ exchange: Exchange, now: NIODeadline) {
        guard let breaker = exchange.route.breaker, let started = exchange.attemptStartedAt, let ticket = exchange.context.breakerTicket else { return }
        exchange.attemptStartedAt = nil
        exchange.context.breakerRecorded = true
        breaker.record(status: nil, duration: now.uptimeNanoseconds &- started.uptimeNanoseconds, ticket: ticket, now: now)
    }

    /// What the exchange holds of the fault-tolerance policies is given back at the one exit: its breaker ticket
    /// when no try was recorded with it, its admission slot or queue place.
    func releasePolicyHolds(_ exchange: Exchange) {
        if let breaker = exchange.route.breaker, let ticket = exchange.context.breakerTicket, !exchange.context.breakerRecorded {
            exchange.context.breakerRecorded = true
            breaker.cancel(ticket, now: clock.now())
        }
        releaseAdmission(exchange)
    }

    /// The answer for a request whose total timeout fired while a policy held it.
    static func suspensionTimedOut(_ kind: PolicyKind, _ exchange: Exchange) -> GatewayReply {
        let milliseconds = exchange.route.totalTimeout.nanoseconds / 1_000_000
        switch kind {
        case .admission:
            return ClusterAdmission.overloaded(exchange.route.cluster.name, "no slot within the route's total timeout of \(milliseconds) ms", closes: !exchange.requestEnded)
        case .rateLimit:
            return GatewayReply(.serviceUnavailable, "the request's rate-limit turn came after the route's total timeout of \(milliseconds) ms", error: "rate_limited", closes: !exchange.requestEnded, cause: .rejected(by: .rateLimit), headers: [("Retry-After", "1")])
        case .bearer, .priority, .circuitBreaker:
            return RoutePolicy.unavailable("the token could not be checked within \(milliseconds) ms; retry later", close: !exchange.requestEnded)
        }
    }

    /// Gives back what the exchange holds at its cluster's admission control (called by `finish`, once).
    func releaseAdmission(_ exchange: Exchange) {
        switch exchange.context.admission {
        case .none:
            return
        case .holding(let admission):
            exchange.context.admission = .none
            admission.release(now: clock.now())
        case .queued(let admission, let waiter, let ticket):
            exchange.context.admission = .none
            // Still queued: its place is freed now. Otherwise a slot was granted just now and the suspension's
            // continuation, finding the exchange gone, passes it on.
            if admission.cancel(ticket) {
                waiter.promise.succeed(.reject(ClusterAdmission.overloaded(admission.clusterName, "the request ended while queued")))
            }
        }
    }
}
