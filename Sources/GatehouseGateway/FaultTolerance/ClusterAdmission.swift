import GatehouseConfiguration
import GatehousePolicies
import NIOCore
import Synchronization

/// A cluster's admission control (`admission`): at most `max_in_flight` requests with its targets; the rest wait
/// in a bounded queue ordered critical → normal → sheddable, a full queue shedding its lowest class first.
///
/// One queue per cluster shared by every event loop, behind a `Mutex`: "at most max_in_flight" is a global bound,
/// and splitting it per loop would either overshoot or strand capacity on an idle loop. The lock is held for one
/// arrive or one depart (a few dozen nanoseconds; see `AdmissionQueue`'s figures in README), twice per request, and
/// only on routes whose cluster configures `admission`.
///
/// A waiter is the promise its suspended request waits on: granting a slot completes it from whichever loop freed
/// the slot, and NIO runs the continuation on the waiter's own loop.
final class ClusterAdmission: Sendable {
    final class Waiter: Sendable {
        let promise: EventLoopPromise<PolicyResumption>
        let priority: PriorityClass
        init(promise: EventLoopPromise<PolicyResumption>, priority: PriorityClass) {
            self.promise = promise
            self.priority = priority
        }
    }

    let clusterName: String
    let definition: GatewayConfiguration.Admission
    /// Waiters are optional so that a request admitted at once allocates nothing: it passes `nil`, which is never
    /// queued (a slot is free and nobody waits, checked under the same lock).
    private let queue: Mutex<AdmissionQueue<Waiter?>>
    /// Requests shed per priority class (index = `PriorityClass.rawValue`): refused on arrival, displaced, or timed out.
    private let shed = Mutex<[Int]>([0, 0, 0])

    init(clusterName: String, definition: GatewayConfiguration.Admission) {
        self.clusterName = clusterName
        self.definition = definition
        self.queue = Mutex(
            AdmissionQueue(
                settings: AdmissionSettings(
                    maxInFlight: definition.maxInFlight, queueSize: definition.queueSize,
                    queueTimeout: UInt64(definition.queueTimeoutMilliseconds) * 1_000_000
                )
            )
        )
    }

    /// What happened to a request at admission.
    enum Entry {
        /// It holds a slot now.
        case admitted
        /// It waits on `waiter`'s promise; `ticket` cancels its place.
        case queued(Waiter, AdmissionTicket)
        /// Refused: the queue is full of requests at least as important.
        case refused
    }

    func arrive(priority: PriorityClass, now: NIODeadline, on eventLoop: any EventLoop) -> Entry {
        let maxInFlight = definition.maxInFlight
        let (action, waiter) = queue.withLock { queue -> (ArrivalAction<Waiter?>, Waiter?) in
            if queue.inFlight < maxInFlight && queue.queued == 0 {
                return (queue.arrive(nil, priority: priority, now: now.uptimeNanoseconds), nil)
            }
            let waiter = Waiter(promise: eventLoop.makePromise(of: PolicyResumption.self), priority: priority)
            return (queue.arrive(waiter, priority: priority, now: now.uptimeNanoseconds), waiter)
        }
        switch action {
        case .admitNow:
            // (Only possible with `nil`: a waiter is made only when no slot was free under the lock.)
            waiter?.promise.succeed(.proceed(identity: nil))
            return .admitted
        case .queued(let ticket):
            return .queued(waiter!, ticket)
        case .queuedDisplacing(let ticket, let displaced):
            if let displaced {
                countShed(displaced.priority)
                displaced.promise.succeed(.reject(Self.overloaded(clusterName, "displaced by a more important request")))
            }
            return .queued(waiter!, ticket)
        case .refuse:
            countShed(priority)
            waiter?.promise.succeed(.proceed(identity: nil))  // never waited on; completed so that it is not leaked
            return .refused
        }
    }

    /// A request that held a slot is done with the cluster: the slot goes to the next waiter, if any.
    func release(now: NIODeadline) {
        if let next = queue.withLock({ $0.depart(now: now.uptimeNanoseconds) }), let next {
            next.promise.succeed(.proceed(identity: nil))
        }
    }

    /// A queued request went away (its client left, or its exchange timed out): its place is freed at once. False
    /// when it was no longer queued — it had just been granted a slot, which its continuation then gives back.
    func cancel(_ ticket: AdmissionTicket) -> Bool {
        queue.withLock { $0.cancel(ticket) }
    }

    /// Answers the waiters past the queue timeout (called by every loop's ticker).
    func expire(now: NIODeadline) {
        let expired = queue.withLock { $0.expire(now: now.uptimeNanoseconds) }
        for case let waiter? in expired {
            countShed(waiter.priority)
            waiter.promise.succeed(.reject(Self.overloaded(clusterName, "waited \(definition.queueTimeoutMilliseconds) ms in the admission queue")))
        }
    }

    private func countShed(_ priority: PriorityClass) {
        shed.withLock { $0[priority.rawValue] += 1 }
    }

    struct Snapshot {
        var inFlight: Int
        var queued: Int
        var shed: [Int]
    }

    func snapshot() -> Snapshot {
        let (inFlight, queued) = queue.withLock { ($0.inFlight, $0.queued) }
        return Snapshot(inFlight: inFlight, queued: queued, shed: shed.withLock { $0 })
    }

    /// 503 `overloaded` with `Retry-After`. The connection stays usable when the request had no body (the caller
    /// decides; a suspended request's body is still unread in the socket).
    static func overloaded(_ cluster: String, _ why: String, closes: Bool = true) -> GatewayReply {
        GatewayReply(
            .serviceUnavailable, "cluster \(cluster) is overloaded (\(why)); retry later", error: "overloaded", closes: closes,
            cause: .rejected(by: .admission), headers: [("Retry-After", "1")]
        )
    }
}
