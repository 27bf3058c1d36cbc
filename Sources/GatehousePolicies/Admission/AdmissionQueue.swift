/// A cluster's admission: at most `maxInFlight` requests with its targets, the rest waiting in a bounded queue
/// ordered by class (critical, then normal, then sheddable; first come first served within a class). A pure state
/// machine: the caller owns the waiters (in the gateway, a promise on the waiter's own event loop) and answers the
/// ones it is handed back.
///
/// **Displacement.** When the queue is full, a newcomer takes the place of the *newest* waiter of the lowest class
/// strictly below its own; if there is none it is refused. The newest rather than the oldest: the oldest has waited
/// longest and is the nearest to being served (or the nearest to its timeout, which would free its place anyway),
/// so dropping the newest throws away the least waiting already done, and keeps the class's FIFO promise to those
/// who came first.
///
/// **Identity.** Queued waiters are named by an `AdmissionTicket` (a counter), so `cancel` is a dictionary removal;
/// the class FIFOs keep the cancelled ticket as a tombstone that is skipped when reached, and are compacted when
/// tombstones outnumber the living.
///
/// Invariants (checked by the randomized test): `inFlight ≤ maxInFlight`; `queued ≤ queueSize`; a waiter queues
/// only while every slot is taken (`queued > 0` ⇒ `inFlight == maxInFlight`).
public struct AdmissionQueue<Waiter> {
    struct Entry {
        var waiter: Waiter
        var priority: PriorityClass
        var deadline: UInt64
    }

    /// Tickets of one class in arrival order (some cancelled: absent from `entries`).
    struct FIFO: Sendable {
        var tickets: [UInt64] = []
        var head = 0

        var isEmpty: Bool { head == tickets.count }

        mutating func append(_ ticket: UInt64) { tickets.append(ticket) }

        /// Drops the consumed prefix once it is most of the array (amortized O(1) per pop).
        mutating func advance() {
            head += 1
            if head == tickets.count {
                tickets.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 64, head * 2 >= tickets.count {
                tickets.removeFirst(head)
                head = 0
            }
        }
    }

    public let settings: AdmissionSettings
    public private(set) var inFlight = 0
    public private(set) var stats = AdmissionStats()
    private var entries: [UInt64: Entry] = [:]
    private var fifos = [FIFO](repeating: FIFO(), count: PriorityClass.allCases.count)
    private var counts = [Int](repeating: 0, count: PriorityClass.allCases.count)
    private var nextTicket: UInt64 = 0

    public init(settings: AdmissionSettings) {
        self.settings = settings
    }

    /// Waiters in the queue.
    public var queued: Int { entries.count }
    /// Waiters in the queue per class, indexed by `PriorityClass.rawValue`.
    public var queuedByClass: [Int] { counts }

    /// A request of class `priority` arrives at `now`.
    public mutating func arrive(_ waiter: Waiter, priority: PriorityClass, now: UInt64) -> ArrivalAction<Waiter> {
        if inFlight < settings.maxInFlight, entries.isEmpty {
            inFlight += 1
            stats.admittedAtOnce += 1
            return .admitNow
        }
        if entries.count < settings.queueSize {
            return .queued(enqueue(waiter, priority: priority, now: now))
        }
        // Full: the lowest class below the newcomer's that has a waiter gives up its newest.
        for lower in PriorityClass.allCases where lower < priority && counts[lower.rawValue] > 0 {
            guard let displaced = popNewest(lower) else { continue }
            stats.displaced += 1
            return .queuedDisplacing(enqueue(waiter, priority: priority, now: now), displaced: displaced)
        }
        stats.refused += 1
        return .refuse
    }

    /// A request admitted earlier is done and frees its slot at `now`: returns the waiter that takes the slot (the
    /// caller forwards it), or nil when nobody waits.
    public mutating func depart(now: UInt64) -> Waiter? {
        precondition(inFlight > 0, "depart without an admitted request")
        for priority in PriorityClass.allCases.reversed() where counts[priority.rawValue] > 0 {
            if let waiter = popOldest(priority) {
                stats.admittedFromQueue += 1
                return waiter  // the slot passes from the departed request to it: inFlight unchanged
            }
        }
        inFlight -= 1
        return nil
    }

    /// Removes a queued waiter (its client went away, or its own timer fired); false if it was not queued (already
    /// admitted, displaced or expired).
    @discardableResult
    public mutating func cancel(_ ticket: AdmissionTicket) -> Bool {
        guard let entry = entries.removeValue(forKey: ticket.value) else { return false }
        let rawClass = entry.priority.rawValue
        counts[rawClass] -= 1
        // Tombstones outnumbering the living (clients leaving while nothing departs): keep only the living, so the
        // FIFO stays within twice the queue size.
        let stored = fifos[rawClass].tickets.count - fifos[rawClass].head
        if stored > 32, stored > 2 * counts[rawClass] {
            fifos[rawClass].tickets = fifos[rawClass].tickets[fifos[rawClass].head...].filter { entries[$0] != nil }
            fifos[rawClass].head = 0
        }
        stats.cancelled += 1
        return true
    }

    /// Removes and returns the waiters whose wait reached `queueTimeout` at `now` (answer them 503), oldest first
    /// within each class.
    public mutating func expire(now: UInt64) -> [Waiter] {
        var expired: [Waiter] = []
        for priority in PriorityClass.allCases.reversed() {
            let rawClass = priority.rawValue
            // Within a class deadlines grow with arrival, so the expired ones are at the head.
            while let ticket = firstLiving(rawClass), let entry = entries[ticket], entry.deadline <= now {
                entries[ticket] = nil
                fifos[rawClass].advance()
                counts[rawClass] -= 1
                expired.append(entry.waiter)
            }
        }
        stats.expired += expired.count
        return expired
    }

    /// The earliest time a queued waiter times out, for the caller's timer; nil when the queue is empty.
    public func nextDeadline() -> UInt64? {
        var earliest: UInt64?
        for rawClass in fifos.indices {
            var index = fifos[rawClass].head
            while index < fifos[rawClass].tickets.count {
                if let entry = entries[fifos[rawClass].tickets[index]] {
                    earliest = min(earliest ?? entry.deadline, entry.deadline)
                    break
                }
                index += 1
            }
        }
        return earliest
    }

    // MARK: FIFOs

    private mutating func enqueue(_ waiter: Waiter, priority: PriorityClass, now: UInt64) -> AdmissionTicket {
        nextTicket += 1
        let (deadline, overflow) = now.addingReportingOverflow(settings.queueTimeout)
        entries[nextTicket] = Entry(waiter: waiter, priority: priority, deadline: overflow ? .max : deadline)
        fifos[priority.rawValue].append(nextTicket)
        counts[priority.rawValue] += 1
        stats.queued += 1
        return AdmissionTicket(nextTicket)
    }

    /// Skips tombstones at the head; the first living ticket of the class, if any.
    private mutating func firstLiving(_ rawClass: Int) -> UInt64? {
        while !fifos[rawClass].isEmpty {
            let ticket = fifos[rawClass].tickets[fifos[rawClass].head]
            if entries[ticket] != nil { return ticket }
            fifos[rawClass].advance()
        }
        return nil
    }

    private mutating func popOldest(_ priority: PriorityClass) -> Waiter? {
        guard let ticket = firstLiving(priority.rawValue), let entry = entries.removeValue(forKey: ticket) else { return nil }
        fifos[priority.rawValue].advance()
        counts[priority.rawValue] -= 1
        return entry.waiter
    }

    private mutating func popNewest(_ priority: PriorityClass) -> Waiter? {
        let rawClass = priority.rawValue
        while fifos[rawClass].tickets.count > fifos[rawClass].head {
            let ticket = fifos[rawClass].tickets.removeLast()
            if let entry = entries.removeValue(forKey: ticket) {
                counts[rawClass] -= 1
                return entry.waiter
            }
        }
        return nil
    }
}

extension AdmissionQueue: Sendable where Waiter: Sendable {}
extension AdmissionQueue.Entry: Sendable where Waiter: Sendable {}
