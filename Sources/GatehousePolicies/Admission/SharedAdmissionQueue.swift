import Synchronization

/// A cluster's `AdmissionQueue` shared by every event loop: one `Mutex`, because "at most `max_in_flight`" across
/// loops cannot be kept by splitting the slots per loop (a busy loop would queue while another's slots sit idle)
/// and an exact merge would cost more than the lock. Held only for the queue's arithmetic; the caller completes
/// the waiters it is handed (on their own loops) after the call returns. Measured with `scripts/bench-policies.sh`:
/// see README, "Rate limits, breakers, admission: the model".
public final class SharedAdmissionQueue<Waiter: Sendable>: Sendable {
    private let queue: Mutex<AdmissionQueue<Waiter>>

    public init(settings: AdmissionSettings) {
        queue = Mutex(AdmissionQueue(settings: settings))
    }

    /// See `AdmissionQueue.arrive(_:priority:now:)`.
    public func arrive(_ waiter: Waiter, priority: PriorityClass, now: UInt64) -> ArrivalAction<Waiter> {
        queue.withLock { $0.arrive(waiter, priority: priority, now: now) }
    }

    /// See `AdmissionQueue.depart(now:)`.
    public func depart(now: UInt64) -> Waiter? {
        queue.withLock { $0.depart(now: now) }
    }

    /// See `AdmissionQueue.cancel(_:)`.
    @discardableResult
    public func cancel(_ ticket: AdmissionTicket) -> Bool {
        queue.withLock { $0.cancel(ticket) }
    }

    /// See `AdmissionQueue.expire(now:)`.
    public func expire(now: UInt64) -> [Waiter] {
        queue.withLock { $0.expire(now: now) }
    }

    /// See `AdmissionQueue.nextDeadline()`.
    public func nextDeadline() -> UInt64? {
        queue.withLock { $0.nextDeadline() }
    }

    /// In flight, queued, queued per class, and the counters, read together.
    public func snapshot() -> (inFlight: Int, queued: Int, queuedByClass: [Int], stats: AdmissionStats) {
        queue.withLock { ($0.inFlight, $0.queued, $0.queuedByClass, $0.stats) }
    }
}
