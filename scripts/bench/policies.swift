// Micro-benchmark of the policy state machines (rate limiter, circuit breaker, admission queue), compiled together
// with Sources/GatehousePolicies by scripts/bench-policies.sh. Not a test: it prints figures, it asserts nothing.
import Dispatch
import Glibc
import Synchronization

@main
struct PolicyBench {
    static func main() {
        let scale = Int(CommandLine.arguments.dropFirst().first ?? "1") ?? 1
        print("GatehousePolicies micro-benchmark (swiftc -O; \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs)")
        rateLimiter(scale: scale)
        breaker(scale: scale)
        admission(scale: scale)
    }

    static func nanoseconds(_ body: () -> Void) -> Double {
        let start = ContinuousClock.now
        body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
    }

    static func residentBytes() -> Int {
        // statm: "size resident shared ..." in pages.
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return 0 }
        let fields = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ")
        guard fields.count > 1, let resident = Int(fields[1]) else { return 0 }
        return resident * sysconf(Int32(_SC_PAGESIZE))
    }

    static func report(_ label: String, _ total: Double, _ count: Int) {
        let padded = label + String(repeating: " ", count: max(1, 60 - label.count))
        print("\(padded)\((total / Double(count) * 10).rounded() / 10) ns")
    }

    static func rateLimiter(scale: Int) {
        let rule = RateLimitRule(name: "per-client", rate: 100, per: 1_000_000_000, burst: 20, maxDelay: 0)
        var sink = 0
        // One key, the clock moving 1 µs a decision (mostly refusals after the burst: the same work as an allow).
        let one = RateLimiter(rule: rule)
        let decisions = 2_000_000 * scale
        let oneKey = nanoseconds {
            for index in 0..<decisions {
                if case .allow = one.decide("client-1", now: UInt64(index) * 1_000) { sink &+= 1 }
            }
        }
        report("rate limit decision, 1 key", oneKey, decisions)

        // 100,000 distinct keys: memory per key (RSS delta over the keys' insertion; the key strings are 13 bytes,
        // stored inline), then decisions cycling over them.
        let keyCount = 100_000
        let keys = (0..<keyCount).map { "client-\(String(100_000 + $0).dropFirst())" }
        let before = residentBytes()
        let many = RateLimiter(rule: rule, maxKeys: keyCount)
        for (index, key) in keys.enumerated() { _ = many.decide(key, now: UInt64(index)) }
        let after = residentBytes()
        let tracked = many.stats().trackedKeys
        let perKey = nanoseconds {
            for round in 0..<(10 * scale) {
                for (index, key) in keys.enumerated() {
                    let now = UInt64(keyCount) + UInt64(round * keyCount + index) * 10
                    if case .allow = many.decide(key, now: now) { sink &+= 1 }
                }
            }
        }
        report("rate limit decision, \(keyCount) distinct keys", perKey, 10 * scale * keyCount)
        print("  tracked keys: \(tracked) of \(keyCount); resident memory per tracked key: \((after - before) / max(1, tracked)) bytes")

        // Two threads deciding for the same key at once (the lock contended).
        let shared = RateLimiter(rule: rule)
        let perThread = 1_000_000 * scale
        let contended = nanoseconds {
            DispatchQueue.concurrentPerform(iterations: 2) { thread in
                var local = 0
                for index in 0..<perThread {
                    if case .allow = shared.decide("client-1", now: UInt64(index) * 1_000) { local &+= 1 }
                }
                if local == -1 { print(thread) }
            }
        }
        report("rate limit decision, 2 threads on 1 key (wall / decisions)", contended, 2 * perThread)
        if sink == -1 { print(sink) }
    }

    static func breaker(scale: Int) {
        let calls = 5_000_000 * scale
        let shared = SharedCircuitBreaker(settings: .init())
        let sharedCost = nanoseconds {
            for index in 0..<calls {
                let now = UInt64(index) * 100
                if case .allow(let ticket) = shared.admit(now: now) {
                    shared.record(.success(duration: 1_000_000), ticket: ticket, now: now)
                }
            }
        }
        report("breaker admit+record, closed (SharedCircuitBreaker)", sharedCost, calls)
        let admitOnly = nanoseconds {
            var allowed = 0
            for index in 0..<calls {
                if case .allow = shared.admit(now: UInt64(index)) { allowed &+= 1 }
            }
            if allowed == -1 { print(allowed) }
        }
        report("breaker admit only, closed (one atomic load)", admitOnly, calls)
        var value = CircuitBreaker(settings: .init())
        let valueCost = nanoseconds {
            for index in 0..<calls {
                let now = UInt64(index) * 100
                if case .allow(let ticket) = value.admit(now: now) {
                    value.record(.success(duration: 1_000_000), ticket: ticket, now: now)
                }
            }
        }
        report("breaker admit+record, closed (value type, no lock)", valueCost, calls)
        let perThread = 2_000_000 * scale
        let contended = nanoseconds {
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                for index in 0..<perThread {
                    let now = UInt64(index) * 100
                    if case .allow(let ticket) = shared.admit(now: now) {
                        shared.record(.success(duration: 1_000_000), ticket: ticket, now: now)
                    }
                }
            }
        }
        report("breaker admit+record, 2 threads (wall / calls)", contended, 2 * perThread)
    }

    static func admission(scale: Int) {
        let calls = 2_000_000 * scale
        let settings = AdmissionSettings(maxInFlight: 100, queueSize: 200, queueTimeout: 1_000_000_000)
        let shared = SharedAdmissionQueue<Int>(settings: settings)
        let uncontended = nanoseconds {
            for index in 0..<calls {
                _ = shared.arrive(index, priority: .normal, now: UInt64(index))
                _ = shared.depart(now: UInt64(index))
            }
        }
        report("admission arrive+depart, slot free (SharedAdmissionQueue)", uncontended, calls)
        // Saturated: every slot taken, each arrival queues and each departure hands the slot to the oldest waiter.
        for index in 0..<100 { _ = shared.arrive(index, priority: .normal, now: 0) }
        let queued = nanoseconds {
            for index in 0..<calls {
                _ = shared.arrive(index, priority: index % 3 == 0 ? .critical : .normal, now: UInt64(index))
                _ = shared.depart(now: UInt64(index))
            }
        }
        report("admission arrive+depart, saturated (queue + hand-over)", queued, calls)
        let perThread = 1_000_000 * scale
        let fresh = SharedAdmissionQueue<Int>(settings: settings)
        let contended = nanoseconds {
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                for index in 0..<perThread {
                    _ = fresh.arrive(index, priority: .normal, now: UInt64(index))
                    _ = fresh.depart(now: UInt64(index))
                }
            }
        }
        report("admission arrive+depart, 2 threads (wall / pairs)", contended, 2 * perThread)
    }
}
