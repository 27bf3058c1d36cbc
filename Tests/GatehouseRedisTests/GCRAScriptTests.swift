import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import GatehouseRedis

/// The issue's GCRA formulas, written out in Swift from the text (not from the Lua), to check the script against.
enum GCRAReference {
    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    /// The decision at `now` for a stored TAT (nil = no key), and the TAT stored afterwards (nil = unchanged).
    static func decide(storedTAT: Int64?, now: Int64, interval T: Int64, burst b: Int, maxDelay d: Int64, cost n: Int = 1)
        -> (decision: ClusterRateLimitDecision, newTAT: Int64?)
    {
        let tau = Int64(b - 1) * T
        let tat = max(storedTAT ?? now, now)
        let excess = tat - now + Int64(n - 1) * T - tau
        if excess > 0 && excess > d {
            let remaining = max(0, floorDiv(tau + T - (tat - now), T))
            return (ClusterRateLimitDecision(outcome: .refuse(retryAfterMicros: excess), remaining: Int(remaining), resetAfterMicros: tat - now, nowMicros: now), nil)
        }
        let newTAT = tat + Int64(n) * T
        let remaining = max(0, floorDiv(tau + T - (newTAT - now), T))
        let outcome: ClusterRateLimitDecision.Outcome = excess > 0 ? .delay(micros: excess) : .allow
        return (ClusterRateLimitDecision(outcome: outcome, remaining: Int(remaining), resetAfterMicros: newTAT - now, nowMicros: now), newTAT)
    }
}

@Suite struct GCRAReplyMappingTests {
    @Test func repliesMapToDecisions() throws {
        func reply(_ numbers: [Int64]) -> RESPValue { .array(numbers.map { .integer($0) }) }
        #expect(try ClusterRateLimitDecision(reply: reply([0, 4, 0, 100_000, 7])) == ClusterRateLimitDecision(outcome: .allow, remaining: 4, resetAfterMicros: 100_000, nowMicros: 7))
        let delayed = try ClusterRateLimitDecision(reply: reply([1, 0, 2500, 9000, 7]))
        #expect(delayed.outcome == .delay(micros: 2500))
        #expect(delayed.retryAfterMicros == 2500)
        let refused = try ClusterRateLimitDecision(reply: reply([2, 0, 31_000, 50_000, 7]))
        #expect(refused.outcome == .refuse(retryAfterMicros: 31_000))
        #expect(refused.resetAfterMicros == 50_000)
        // RESP2 servers may send script numbers as they are; strings of digits are accepted too.
        #expect(try ClusterRateLimitDecision(reply: .array([.integer(0), .bulkString(ByteBuffer(string: "3")), .integer(0), .integer(5), .integer(1)])).remaining == 3)
    }

    @Test(arguments: [
        RESPValue.array([.integer(0), .integer(1)]),
        .array([.integer(3), .integer(0), .integer(0), .integer(0), .integer(0)]),
        .array([.integer(0), .integer(-1), .integer(0), .integer(0), .integer(0)]),
        .array([.integer(0), .simpleString("x"), .integer(0), .integer(0), .integer(0)]),
        .integer(1), .null,
    ])
    func otherShapesAreProtocolErrors(reply: RESPValue) {
        #expect(throws: RedisError(code: .protocol, message: "")) { _ = try ClusterRateLimitDecision(reply: reply) }
    }

    @Test func referenceFollowsTheIssueExamples() {
        // b = 3, T = 100: a full bucket allows three at once, then refuses for T.
        var tat: Int64?
        var outcomes: [ClusterRateLimitDecision.Outcome] = []
        for _ in 0..<4 {
            let (decision, newTAT) = GCRAReference.decide(storedTAT: tat, now: 1000, interval: 100, burst: 3, maxDelay: 0)
            outcomes.append(decision.outcome)
            tat = newTAT ?? tat
        }
        #expect(outcomes == [.allow, .allow, .allow, .refuse(retryAfterMicros: 100)])
        #expect(GCRAReference.decide(storedTAT: nil, now: 0, interval: 100, burst: 3, maxDelay: 0).decision.remaining == 2)
    }
}

/// The Lua script against a real redis-server.
@Suite(.serialized) struct GCRAScriptTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    func withClient(_ body: (RedisServer, RedisClient) async throws -> Void) async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: server.configuration { $0.commandTimeout = .seconds(2) }, eventLoopGroup: group)
        client.start()
        defer { _ = client.shutdown() }
        try await body(server, client)
    }

    /// Known TATs written with SET, the script's decision compared exactly with the formulas at the `now` the
    /// script reports; then the stored TAT and the key's TTL.
    @Test func scriptAgreesWithTheFormulasOnATableOfCases() async throws {
        try await withClient { server, client in
            // (T, b, d, n, TAT − now at the SET, or nil for no key)
            let cases: [(Int64, Int, Int64, Int, Int64?)] = [
                (10_000, 1, 0, 1, nil), (10_000, 5, 0, 1, nil), (10_000, 5, 0, 1, -5_000_000),
                (10_000, 5, 0, 1, 30_000), (10_000, 5, 0, 1, 45_000), (10_000, 5, 0, 1, 80_000),
                (10_000, 5, 20_000, 1, 55_000), (10_000, 5, 20_000, 1, 90_000), (10_000, 5, 100_000, 1, 500_000),
                (1_000_000, 1, 0, 1, 500_000), (1_000_000, 1, 2_000_000, 1, 500_000), (70_007, 3, 0, 1, nil),
                (10_000, 10, 0, 4, nil), (10_000, 10, 0, 4, 60_000), (10_000, 10, 0, 4, 85_000), (10_000, 10, 50_000, 4, 85_000),
                (16_666, 100, 0, 1, 1_600_000), (333_333, 2, 0, 1, 333_000),
            ]
            var outcomes: Set<String> = []
            for (index, (interval, burst, maxDelay, cost, offset)) in cases.enumerated() {
                let key = "rl:table:\(index)"
                var stored: Int64?
                if let offset {
                    let time = try await client.send(["TIME"]).get().elements!.compactMap(\.int64)
                    stored = time[0] * 1_000_000 + time[1] + offset
                    _ = try await client.send(["SET", key, String(stored!)]).get()
                }
                let decision = try await client.gcra(key: key, emissionIntervalMicros: interval, burst: burst, maxDelayMicros: maxDelay, cost: cost).get()
                let (expected, newTAT) = GCRAReference.decide(
                    storedTAT: stored, now: decision.nowMicros, interval: interval, burst: burst, maxDelay: maxDelay, cost: cost
                )
                #expect(decision == expected, "case \(index)")
                outcomes.insert("\(decision.outcome)".prefix(while: { $0 != "(" }).description)
                let value = try await client.send(["GET", key]).get()
                if let newTAT {
                    #expect(value.int64 == newTAT, "case \(index): the stored TAT")
                    let ttl = try await client.send(["PTTL", key]).get().int64 ?? -3
                    let expectedTTL = (expected.resetAfterMicros + 999) / 1000
                    #expect(ttl <= expectedTTL && ttl >= expectedTTL - 50, "case \(index): TTL \(ttl) ms, expected \(expectedTTL)")
                } else {
                    #expect(value.int64 == stored, "case \(index): a refusal leaves the state as it was")
                }
            }
            #expect(outcomes == ["allow", "delay", "refuse"], "the table must exercise every outcome")
        }
    }

    @Test func allowDelayRefuseInSequence() async throws {
        try await withClient { _, client in
            // T = 100 ms, b = 2, d = 150 ms: allow, allow, delay ≈ 100 ms, refuse ≈ 200 ms (calls ms apart).
            var tat: Int64?
            var outcomes: [String] = []
            for _ in 0..<4 {
                let decision = try await client.gcra(key: "rl:seq", emissionIntervalMicros: 100_000, burst: 2, maxDelayMicros: 150_000).get()
                let (expected, newTAT) = GCRAReference.decide(storedTAT: tat, now: decision.nowMicros, interval: 100_000, burst: 2, maxDelay: 150_000)
                #expect(decision == expected)
                tat = newTAT ?? tat
                switch decision.outcome {
                case .allow: outcomes.append("allow")
                case .delay(let micros):
                    outcomes.append("delay")
                    #expect(micros > 50_000 && micros <= 100_000)
                case .refuse(let micros):
                    outcomes.append("refuse")
                    #expect(micros > 150_000 && micros <= 200_000)
                }
            }
            #expect(outcomes == ["allow", "allow", "delay", "refuse"])
        }
    }

    /// Callers on both event loops hammer one key for about a second: the allowed count is exactly what GCRA
    /// permits between the first and the last decision (Redis's clock), within one emission interval.
    @Test func concurrentCallersFromSeveralLoopsGetExactCounts() async throws {
        try await withClient { _, client in
            let interval: Int64 = 5_000  // 200/s
            let burst = 10
            let results = NIOLockedValueBox<[ClusterRateLimitDecision]>([])
            let until = Date().addingTimeInterval(1.0)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for caller in 0..<8 {
                    let loop = group.any()
                    _ = caller
                    tasks.addTask {
                        while Date() < until {
                            let decision = try await loop.flatSubmit {
                                client.gcra(key: "rl:shared", emissionIntervalMicros: interval, burst: burst, maxDelayMicros: 0)
                            }.get()
                            results.withLockedValue { $0.append(decision) }
                        }
                    }
                }
                try await tasks.waitForAll()
            }
            let decisions = results.withLockedValue { $0 }.sorted { $0.nowMicros < $1.nowMicros }
            #expect(decisions.count > 500, "only \(decisions.count) decisions: not a hammering")
            let first = decisions.first!.nowMicros
            let allowed = decisions.filter { $0.outcome == .allow }
            let lastAllowed = allowed.last!.nowMicros
            let last = decisions.last!.nowMicros
            // Upper bound: the k-th grant needs now ≥ first + (k − b)·T.
            #expect(allowed.count <= burst + Int((lastAllowed - first) / interval), "allowed \(allowed.count)")
            // Lower bound: callers never idle, so every slot is taken within one interval of opening.
            #expect(allowed.count >= burst + Int((last - first) / interval) - 1, "allowed \(allowed.count) over \(last - first) µs")
            #expect(decisions.contains { if case .refuse = $0.outcome { return true } else { return false } })
        }
    }
}
