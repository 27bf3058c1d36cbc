import GatehousePolicies
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
    /// The priority class (load shedding orders by it; the route's, until `priority_overrides` changes it).
    var priority: PriorityClass
    /// The request's place at its cluster's admission: released at the one exit.
    var admission: AdmissionHold = .none
    /// What the fault-tolerance policies decided (access log, spans, `/rate-limits`).
    var limitOutcome: LimitOutcome = .none
    /// The limit that refused the request, with `limitOutcome == .limited`.
    var limitedBy: String?
    var breakerOutcome: BreakerOutcome = .none
    /// The breaker's ticket for this request: every try's result is recorded with it, and a request that ends with
    /// no try recorded gives it back (`.cancelled`), or a half-open trial slot would stay taken.
    var breakerTicket: BreakerTicket?
    var breakerRecorded = false
    var admissionOutcome: AdmissionOutcome = .none
    /// Tracing: the request's trace, its upstream attempt's span, what policies noted (see `GatewayTrace`).
    var trace: GatewayTrace?

    var route: CompiledRoute { admitted.route }

    init(requestID: String, head: HTTPRequestHead, scan: RequestHeadScan, admitted: AdmittedRequest, receivedAt: NIODeadline) {
        self.requestID = requestID
        self.head = head
        self.scan = scan
        self.admitted = admitted
        self.receivedAt = receivedAt
        self.priority = admitted.route.priority
    }
}

/// A request's hold on its cluster's admission control.
enum AdmissionHold {
    case none
    /// Waiting in the queue.
    case queued(ClusterAdmission, ClusterAdmission.Waiter, AdmissionTicket)
    /// Holding one of the cluster's `max_in_flight` slots.
    case holding(ClusterAdmission)
}

enum LimitOutcome: String, Sendable {
    case none = "-", allowed, delayed, limited
}

enum BreakerOutcome: String, Sendable {
    case none = "-", closed, trial, open
}

enum AdmissionOutcome: String, Sendable {
    case none = "-", admitted, queued, shed
}
