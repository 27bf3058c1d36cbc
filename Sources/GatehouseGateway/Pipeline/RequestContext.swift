import NIOCore
import NIOHTTP1

/// What policies and observers may read or change about one request, stored inline in its `Exchange` (no
/// allocation of its own).
struct RequestContext {
    let requestID: String
    /// The head as the client sent it.
    let head: HTTPRequestHead
    /// The one pass over the head.
    let scan: RequestHeadScan
    /// The admission's decisions: route, normalized target, framing.
    let admitted: AdmittedRequest
    /// The one clock read every policy uses.
    let receivedAt: NIODeadline
    /// Set by the bearer policy: who the request is for (rate-limit keys, the access log).
    var identity: ValidatedToken?
    /// Headers for the upstream request beyond what the hygiene rules write (the gateway's JWT).
    var upstreamAdditions = HeaderAdditions()
    /// Headers for the client's response, whoever answers it (`RateLimit`, `traceresponse`).
    var responseAdditions = HeaderAdditions()
    /// The priority class (load shedding orders by it; the route's, until a policy changes it).
    var priority: Priority = .normal
    /// Tracing: the request's trace, its upstream attempt's span, what policies noted (see `GatewayTrace`).
    var trace: GatewayTrace?

    var route: CompiledRoute { admitted.route }
}

/// A request's priority class: under saturation `sheddable` goes first and `critical` last.
enum Priority: UInt8, Comparable, Sendable {
    case sheddable = 0, normal = 1, critical = 2

    static func < (lhs: Priority, rhs: Priority) -> Bool { lhs.rawValue < rhs.rawValue }
}
