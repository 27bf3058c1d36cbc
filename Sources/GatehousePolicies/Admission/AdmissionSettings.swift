/// A request's priority class: who is admitted first from a cluster's queue, and who is shed first.
public enum PriorityClass: Int, Sendable, Comparable, CaseIterable {
    case sheddable = 0, normal = 1, critical = 2

    public static func < (lhs: PriorityClass, rhs: PriorityClass) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A cluster's admission settings (the configuration's `admission` section).
public struct AdmissionSettings: Sendable, Hashable {
    /// Requests with the cluster's targets at once (`max_in_flight`, ≥ 1).
    public var maxInFlight: Int
    /// Requests waiting for a slot (`queue.size`, ≥ 0); beyond it a newcomer displaces a lower class or is refused.
    public var queueSize: Int
    /// Longest wait in the queue, ns (`queue.timeout`).
    public var queueTimeout: UInt64

    public init(maxInFlight: Int, queueSize: Int, queueTimeout: UInt64) {
        self.maxInFlight = max(1, maxInFlight)
        self.queueSize = max(0, queueSize)
        self.queueTimeout = queueTimeout
    }
}

/// Names a queued waiter, for `cancel(_:)`. Tickets are never reused within a queue.
public struct AdmissionTicket: Sendable, Hashable {
    public let value: UInt64
    public init(_ value: UInt64) { self.value = value }
}

/// What to do with an arriving request.
public enum ArrivalAction<Waiter> {
    /// A slot was free and is now taken: forward it (and call `depart` when it is done).
    case admitNow
    /// It waits under this ticket until `depart` hands it out, `expire` times it out or `cancel` removes it.
    case queued(AdmissionTicket)
    /// It waits under this ticket, and `displaced` lost its place: answer that one 503.
    case queuedDisplacing(AdmissionTicket, displaced: Waiter)
    /// The queue is full of waiters of its class or higher: answer it 503.
    case refuse
}

extension ArrivalAction: Sendable where Waiter: Sendable {}

/// Counters of one queue since creation.
public struct AdmissionStats: Sendable, Equatable {
    public var admittedAtOnce = 0
    public var admittedFromQueue = 0
    public var queued = 0
    public var displaced = 0
    public var refused = 0
    public var expired = 0
    public var cancelled = 0
}
