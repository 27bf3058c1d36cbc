import Testing

@testable import GatehousePolicies

private let second: UInt64 = 1_000_000_000

@Suite struct AdmissionQueueTests {
    func queue(maxInFlight: Int = 1, size: Int = 10, timeout: UInt64 = second) -> AdmissionQueue<String> {
        AdmissionQueue(settings: .init(maxInFlight: maxInFlight, queueSize: size, queueTimeout: timeout))
    }

    /// Arrivals that must be queued; returns their tickets.
    @discardableResult
    func enqueue(_ queue: inout AdmissionQueue<String>, _ waiters: [(String, PriorityClass)], now: UInt64 = 0) -> [AdmissionTicket] {
        waiters.compactMap { waiter, priority in
            guard case .queued(let ticket) = queue.arrive(waiter, priority: priority, now: now) else {
                Issue.record("\(waiter) should have been queued")
                return nil
            }
            return ticket
        }
    }

    func drain(_ queue: inout AdmissionQueue<String>) -> [String] {
        var order: [String] = []
        while let next = queue.depart(now: 0) { order.append(next) }
        return order
    }

    @Test func slotsAreTakenThenArrivalsWait() {
        var q = queue(maxInFlight: 2)
        let result1 = q.arrive("a", priority: .normal, now: 0)
        #expect(result1.isAdmitNow)
        let result2 = q.arrive("b", priority: .sheddable, now: 0)
        #expect(result2.isAdmitNow)
        #expect(q.inFlight == 2)
        enqueue(&q, [("c", .normal)])
        #expect(q.queued == 1 && q.inFlight == 2)
        let result3 = q.depart(now: 0)
        #expect(result3 == "c")  // the freed slot passes straight to the waiter
        #expect(q.inFlight == 2)
        let result4 = q.depart(now: 0)
        #expect(result4 == nil)
        #expect(q.inFlight == 1)
    }

    @Test func criticalFirstThenNormalThenSheddableFIFOWithinAClass() {
        var q = queue()
        _ = q.arrive("running", priority: .normal, now: 0)
        enqueue(&q, [("s1", .sheddable), ("n1", .normal), ("c1", .critical), ("s2", .sheddable), ("n2", .normal), ("c2", .critical)])
        #expect(q.queuedByClass == [2, 2, 2])
        let result5 = drain(&q)
        #expect(result5 == ["c1", "c2", "n1", "n2", "s1", "s2"])
        #expect(q.inFlight == 0)
    }

    @Test func aFullQueueDisplacesTheNewestOfTheLowestClassBelowTheNewcomer() {
        var q = queue(size: 4)
        _ = q.arrive("running", priority: .normal, now: 0)
        enqueue(&q, [("s1", .sheddable), ("n1", .normal), ("s2", .sheddable), ("n2", .normal)])
        func displaced(_ name: String, _ priority: PriorityClass) -> String? {
            guard case .queuedDisplacing(_, let displaced) = q.arrive(name, priority: priority, now: 0) else { return nil }
            return displaced
        }
        #expect(displaced("n3", .normal) == "s2")  // a normal newcomer displaces the newest sheddable
        #expect(displaced("c1", .critical) == "s1")  // the lowest class first, even for a critical newcomer
        #expect(displaced("c2", .critical) == "n3")  // then the newest normal
        let result6 = q.arrive("n4", priority: .normal, now: 0)
        #expect(result6.isRefuse)  // nobody below normal is left
        let result7 = q.arrive("s3", priority: .sheddable, now: 0)
        #expect(result7.isRefuse)  // the lowest itself is refused
        #expect(displaced("c3", .critical) == "n2")
        #expect(displaced("c4", .critical) == "n1")
        let result8 = q.arrive("c5", priority: .critical, now: 0)
        #expect(result8.isRefuse)  // full of criticals
        #expect(q.stats.displaced == 5 && q.stats.refused == 3)
        let result9 = drain(&q)
        #expect(result9 == ["c1", "c2", "c3", "c4"])
    }

    @Test func aQueueOfSizeZeroRefusesWhenTheSlotsAreTaken() {
        var q = queue(size: 0)
        let result10 = q.arrive("a", priority: .sheddable, now: 0)
        #expect(result10.isAdmitNow)
        let result11 = q.arrive("b", priority: .critical, now: 0)
        #expect(result11.isRefuse)
    }

    @Test func waitersTimeOutAtTheirDeadline() {
        var q = queue(timeout: second)
        _ = q.arrive("running", priority: .normal, now: 0)
        enqueue(&q, [("early", .sheddable)], now: 100)
        enqueue(&q, [("late", .critical)], now: 200)
        #expect(q.nextDeadline() == second + 100)
        let result12 = q.expire(now: second + 99)
        #expect(result12.isEmpty)
        let result13 = q.expire(now: second + 100)
        #expect(result13 == ["early"])
        #expect(q.nextDeadline() == second + 200)
        let result14 = q.expire(now: 5 * second)
        #expect(result14 == ["late"])
        #expect(q.nextDeadline() == nil)
        #expect(q.queued == 0 && q.inFlight == 1 && q.stats.expired == 2)
    }

    @Test func aCancelledWaiterFreesItsPlaceAtOnce() {
        var q = queue(size: 2)
        _ = q.arrive("running", priority: .normal, now: 0)
        let tickets = enqueue(&q, [("gone", .sheddable), ("stays", .sheddable)])
        let result15 = q.cancel(tickets[0])
        #expect(result15)
        let result16 = q.cancel(tickets[0])
        #expect(!result16)  // only once
        #expect(q.queued == 1)
        enqueue(&q, [("newcomer", .sheddable)])  // the freed place: queued without displacing anyone
        let result17 = drain(&q)
        #expect(result17 == ["stays", "newcomer"])
        let result18 = q.cancel(tickets[1])
        #expect(!result18)  // already admitted
    }

    @Test func cancellingManyKeepsTheFIFOsSmall() {
        var q = queue(size: 10)
        _ = q.arrive("running", priority: .normal, now: 0)
        enqueue(&q, [("first", .normal)])
        for index in 0..<10_000 {
            let ticket = enqueue(&q, [("w\(index)", .normal)])
            q.cancel(ticket[0])
        }
        #expect(q.queued == 1)
        let result19 = drain(&q)
        #expect(result19 == ["first"])
    }

    /// Random arrivals, departures, cancels and expiries with a seeded generator; the invariants hold after every
    /// step and every waiter is answered exactly once.
    @Test(arguments: [1, 7, 42, 2026]) func invariantsHoldUnderRandomOperations(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let settings = AdmissionSettings(maxInFlight: 4, queueSize: 6, queueTimeout: 50)
        var q = AdmissionQueue<Int>(settings: settings)
        var now: UInt64 = 0
        var next = 0
        var classOf: [Int: PriorityClass] = [:]
        var queuedTickets: [Int: AdmissionTicket] = [:]
        var answered = Set<Int>()
        var running = 0
        var admittedFromQueue: [PriorityClass: [Int]] = [:]
        func answer(_ waiter: Int) {
            #expect(!answered.contains(waiter), "\(waiter) answered twice")
            answered.insert(waiter)
            queuedTickets[waiter] = nil
        }
        for _ in 0..<20_000 {
            now += random.next() % 5
            switch random.next() % 10 {
            case 0...4:
                next += 1
                let priority = PriorityClass(rawValue: Int(random.next() % 3))!
                classOf[next] = priority
                switch q.arrive(next, priority: priority, now: now) {
                case .admitNow:
                    answer(next)
                    running += 1
                case .queued(let ticket):
                    queuedTickets[next] = ticket
                case .queuedDisplacing(let ticket, let displaced):
                    #expect(classOf[displaced]! < priority)
                    answer(displaced)
                    queuedTickets[next] = ticket
                case .refuse:
                    #expect(q.queued == settings.queueSize)
                    // Refused only when nobody queued is of a lower class.
                    #expect(q.queuedByClass[0..<priority.rawValue].allSatisfy { $0 == 0 })
                    answer(next)
                }
            case 5...7:
                guard running > 0 else { continue }
                let before = q.queuedByClass
                if let waiter = q.depart(now: now) {
                    let priority = classOf[waiter]!
                    #expect(before[(priority.rawValue + 1)...].allSatisfy { $0 == 0 }, "a higher class was waiting")
                    if let previous = admittedFromQueue[priority]?.last { #expect(previous < waiter, "FIFO within a class") }
                    admittedFromQueue[priority, default: []].append(waiter)
                    answer(waiter)
                } else {
                    running -= 1
                }
            case 8:
                // Sorted: a dictionary's order changes from run to run, the seed must replay the same steps.
                let waiting = queuedTickets.keys.sorted()
                if !waiting.isEmpty {
                    let waiter = waiting[Int(random.next() % UInt64(waiting.count))]
                    let result20 = q.cancel(queuedTickets[waiter]!)
                    #expect(result20)
                    answer(waiter)
                }
            default:
                for waiter in q.expire(now: now) { answer(waiter) }
            }
            #expect(q.inFlight == running)
            #expect(q.inFlight <= settings.maxInFlight)
            #expect(q.queued <= settings.queueSize)
            #expect(q.queued == 0 || q.inFlight == settings.maxInFlight)
            #expect(q.queuedByClass.reduce(0, +) == q.queued)
            #expect(q.queued == queuedTickets.count)
        }
        #expect(answered.count + queuedTickets.count == next)
        #expect(q.stats.displaced > 0 && q.stats.expired > 0 && q.stats.cancelled > 0 && q.stats.refused > 0)
    }
}

/// A small seeded generator (SplitMix64), so a failing sequence can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension ArrivalAction {
    var isAdmitNow: Bool {
        if case .admitNow = self { return true }
        return false
    }
    var isRefuse: Bool {
        if case .refuse = self { return true }
        return false
    }
}
