import NIOCore

/// Why an exchange ended. Every request the gateway sees ends with exactly one of these, in one place
/// (`DownstreamHandler.end(_:)`).
enum EndCause: Equatable, Sendable {
    /// The upstream's response was relayed completely.
    case completed
    /// Refused by the gateway before anything was forwarded (malformed, too large, no route, bad target): the status.
    case refused(status: Int)
    /// Rejected by a route policy.
    case rejected(by: PolicyKind)
    /// The per-try or total timeout fired before the response head.
    case upstreamTimeout
    /// The upstream closed or reset the connection.
    case upstreamReset
    /// The upstream refused the connection.
    case connectFailed
    /// Too many requests waiting for a connection to the cluster.
    case poolExhausted
    /// No healthy target in the cluster.
    case noHealthyTarget
    /// The client went away (or the connection was torn down) before the exchange ended.
    case clientGone
    /// The exchange became a protocol-upgrade tunnel (`101 Switching Protocols`).
    case tunnelled
    /// The response was cut off after its head was sent (the client sees a truncated message).
    case truncated
}

/// What an observer learns about one finished exchange: built once, at the one exit.
struct ExchangeOutcome {
    /// The status sent to the client (0 when nothing could be sent).
    var status: Int
    var cause: EndCause
    /// The route's name; nil when the request was refused before routing.
    var route: String?
    var method: HTTPMethodName
    var requestID: String
    /// Request body bytes received from the client.
    var bytesIn: Int
    /// Upstream tries made.
    var attempts: Int
    /// The last target tried, if any.
    var target: TargetKey?
    /// When the request head arrived, when the upstream's response head arrived (if it did), when it ended.
    var receivedAt: NIODeadline
    var upstreamHeadAt: NIODeadline?
    var endedAt: NIODeadline
    /// The route's metrics index (`MetricLabels`; 0 is `-`, refused before routing) and the bounded method label.
    var routeIndex = 0
    var methodLabel = MethodLabel.other
    /// The exchange itself, for the access log (nil when the request was refused before it became one).
    var exchange: DownstreamHandler.Exchange? = nil
    /// Tracing: the request's trace ids (always), its spans' attributes (sampled requests).
    var trace: ExchangeTrace? = nil

    /// `2xx` … `5xx` (and `0xx` when nothing was sent): a bounded label.
    var statusClass: Int { status / 100 }
}

/// The method as a bounded value (an unknown method counts as `other`).
typealias HTTPMethodName = String

/// The closed set of things told about every finished exchange. A `switch`, not an existential: the access log,
/// metrics and tracing join here as further cases.
enum ExchangeObserver {
    /// Per-loop counters by status class and cause (what `/metrics` will sum across loops).
    case counters
    /// The Prometheus counters and histograms (`GatewayLoopMetrics`).
    case metrics
    /// One JSON line into the loop's access-log buffer (`GatewayAccessLog`).
    case accessLog
    /// Spans of sampled exchanges to the exporter (`DownstreamHandler+Tracing.swift`).
    case tracing

    func observe(_ outcome: ExchangeOutcome, loop: LoopState) {
        switch self {
        case .counters:
            loop.outcomes.record(outcome)
        case .metrics:
            loop.metrics.record(outcome)
        case .accessLog:
            loop.logAccess(outcome)
        case .tracing:
            Self.recordSpans(outcome, loop: loop)
        }
    }
}

/// Per-loop tallies of finished exchanges. Confined to its loop: plain integers, no lock.
struct OutcomeCounters: Sendable {
    /// Index = status class (0…5).
    private(set) var byStatusClass = [Int](repeating: 0, count: 6)
    private(set) var completed = 0
    private(set) var refused = 0
    private(set) var rejected = 0
    private(set) var upstreamFailures = 0
    private(set) var clientGone = 0
    private(set) var tunnelled = 0
    private(set) var total = 0

    /// Adds another loop's tallies (the admin listener sums them at read time).
    mutating func add(_ other: OutcomeCounters) {
        for index in byStatusClass.indices { byStatusClass[index] += other.byStatusClass[index] }
        completed += other.completed
        refused += other.refused
        rejected += other.rejected
        upstreamFailures += other.upstreamFailures
        clientGone += other.clientGone
        tunnelled += other.tunnelled
        total += other.total
    }

    mutating func record(_ outcome: ExchangeOutcome) {
        total += 1
        byStatusClass[min(max(outcome.statusClass, 0), 5)] += 1
        switch outcome.cause {
        case .completed: completed += 1
        case .refused: refused += 1
        case .rejected: rejected += 1
        case .upstreamTimeout, .upstreamReset, .connectFailed, .poolExhausted, .noHealthyTarget, .truncated: upstreamFailures += 1
        case .clientGone: clientGone += 1
        case .tunnelled: tunnelled += 1
        }
    }
}
