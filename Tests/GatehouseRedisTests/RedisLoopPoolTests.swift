import Foundation
import GatehouseTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import GatehouseRedis

/// Connections per event loop (`RedisLoopPool`): a command sent from a loop goes out on a connection of that loop and
/// its reply completes there; `pool_size` counts per loop; shutdown reaches every loop's connections.
@Suite(.serialized) struct RedisLoopPoolTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)

    /// Connections the server has open, without the `redis-cli` asking.
    func serverConnections(_ server: RedisServer) throws -> Int {
        try server.cli(["CLIENT", "LIST"]).split(separator: "\n").count - 1
    }

    @Test func eachLoopSendsOnItsOwnConnectionsAndIsAnsweredOnItself() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        // The client's own group only serves callers on no loop: the three loops below are not in it.
        let client = RedisClient(configuration: server.configuration { $0.poolSize = 2; $0.commandTimeout = .seconds(2) }, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        defer { _ = client.shutdown() }
        #expect(!client.isConnected)
        #expect(try serverConnections(server) == 0)

        var idsByLoop: [Set<Int64>] = []
        for loop in group.makeIterator() {
            let answers = try await loop.flatSubmit {
                // Six commands from this loop (the first ones wait for its pool's first connection).
                let futures = (0..<6).map { _ in client.send(["CLIENT", "ID"]) }
                let onCaller = futures.allSatisfy { $0.eventLoop === loop }
                return EventLoopFuture.whenAllSucceed(futures, on: loop).map { replies in
                    (onCaller && loop.inEventLoop, replies.compactMap(\.int64))
                }
            }.get()
            #expect(answers.0, "a reply must complete on the loop that sent the command")
            #expect(answers.1.count == 6)
            idsByLoop.append(Set(answers.1))
        }
        // Each loop used only its own connections (at most pool_size of them), shared with no other loop.
        #expect(idsByLoop.allSatisfy { !$0.isEmpty && $0.count <= 2 })
        #expect(Set(idsByLoop.flatMap { $0 }).count == idsByLoop.map(\.count).reduce(0, +))
        // pool_size is per loop: 3 loops × 2, and none on the client's own group (no caller was off a loop).
        #expect(try await eventually(timeout: .seconds(5)) { try serverConnections(server) == 6 })
        #expect(client.isConnected)
        #expect(client.pools.all.count == 3)

        _ = try await client.shutdown().get()
        #expect(try await eventually(timeout: .seconds(5)) { try serverConnections(server) == 0 })
        #expect(!client.isConnected)
        // After shutdown every loop, including one that never sent anything, fails at once.
        for loop in group.makeIterator() {
            let error = await #expect(throws: RedisError.self) { try await loop.flatSubmit { client.send(["PING"]) }.get() }
            #expect(error?.code == .unavailable)
        }
        let fresh = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { fresh.shutdownGracefully { _ in } }
        let error = await #expect(throws: RedisError.self) { try await client.send(["PING"], on: fresh.next()).get() }
        #expect(error?.code == .unavailable)
        #expect(try serverConnections(server) == 0)
    }

    @Test func callersOnNoLoopUseTheClientsGroup() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let own = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { own.shutdownGracefully { _ in } }
        let client = RedisClient(configuration: server.configuration { $0.poolSize = 1 }, eventLoopGroup: own)
        defer { _ = client.shutdown() }
        let future = client.send(["PING"])
        #expect(future.eventLoop === own.next())
        #expect(try await future.get() == .simpleString("PONG"))
        #expect(client.pools.all.map { $0.eventLoop === own.next() } == [true])
    }

    /// Loops appending their pools at once: the lock-free list keeps every one, once, and finds each by its loop.
    @Test func loopsAppendingConcurrentlyAreAllFound() async throws {
        let many = MultiThreadedEventLoopGroup(numberOfThreads: 8)
        defer { many.shutdownGracefully { _ in } }
        let shared = RedisClient.Shared(configuration: RedisConfiguration(), statistics: RedisStatistics(), logger: .init(label: "test"))
        let pools = RedisLoopPools()
        let loops = Array(many.makeIterator())
        try await EventLoopFuture.andAllSucceed(loops.map { loop in
            loop.submit {
                if pools.find(loop) == nil { pools.append(RedisLoopPool(eventLoop: loop, shared: shared)) }
            }
        }, on: loops[0]).get()
        let found = loops.map { pools.find($0)?.eventLoop }
        #expect(zip(found, loops).allSatisfy { $0 === $1 })
        #expect(pools.all.count == 8)
    }

    /// The gateway's call, encoded once per limit, writes the same bytes as the command spelled out, and decides.
    @Test func aPreparedGCRACallIsTheCommandItStandsFor() async throws {
        let prefix = "gatehouse:rl:api:per-ip:"
        let call = GCRACall(keyPrefix: prefix, emissionIntervalMicros: 10_000, burst: 20, maxDelayMicros: 250_000, cost: 3)
        for key in ["", "ip\u{1F}127.0.0.1", String(repeating: "k", count: 300), "ключ"] {
            var prepared = ByteBuffer()
            call.command(key: key).encode(into: &prepared)
            var plain = ByteBuffer()
            RedisCommand(["EVALSHA", GCRAScript.script.sha1, "1", prefix + key, "10000", "20", "250000", "3"]).encode(into: &plain)
            #expect(prepared == plain)
            #expect(call.command(key: key).encodedLength == prepared.readableBytes)
        }

        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = RedisClient(configuration: server.configuration { $0.commandTimeout = .seconds(2) }, eventLoopGroup: group)
        defer { _ = client.shutdown() }
        let loop = group.next()
        let single = GCRACall(keyPrefix: prefix, emissionIntervalMicros: 10_000, burst: 20, maxDelayMicros: 0)
        let decisions = NIOLockedValueBox<[ClusterRateLimitDecision]>([])
        for _ in 0..<21 {
            let decision = try await loop.flatSubmit {
                let promise = loop.makePromise(of: ClusterRateLimitDecision.self)
                client.gcra(single, key: "a", on: loop) { result in
                    loop.preconditionInEventLoop()
                    promise.completeWith(result)
                }
                return promise.futureResult
            }.get()
            decisions.withLockedValue { $0.append(decision) }
        }
        // Each decision is exactly the formulas' at the `now` Redis reports (burst 20 at 100/s: twenty grants from a
        // full bucket, then a refusal unless a slot reopened meanwhile).
        var tat: Int64?
        for decision in decisions.withLockedValue({ $0 }) {
            let expected = GCRAReference.decide(storedTAT: tat, now: decision.nowMicros, interval: 10_000, burst: 20, maxDelay: 0)
            #expect(decision == expected.decision)
            tat = expected.newTAT ?? tat
        }
        #expect(decisions.withLockedValue { $0.first?.remaining } == 19)
        #expect(try server.cli(["EXISTS", prefix + "a"]) == "1")
    }
}
