import ArgumentParser
import GatehouseRedis
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `gatehouse bench-redis`: GCRA decisions per second through `RedisClient` (scripts/bench-redis.sh runs it; hidden
/// from help). Two event loops each keep `inFlight` decisions outstanding (a new one starts when one completes, on
/// the same loop, as a gateway's request handlers would), over 1,000 keys with a limit nobody reaches. Prints
/// decisions/s and writes (flushes, i.e. round trips) per decision.
struct RedisBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-redis", abstract: "Benchmark the cluster rate limiter's Redis client.", shouldDisplay: false)

    @Argument var port: Int = 6379
    @Argument var poolSize: Int = 4
    @Argument var seconds: Int64 = 5
    @Argument var inFlight: Int = 32

    func run() throws {
        let port = self.port, poolSize = self.poolSize, seconds = self.seconds, inFlight = self.inFlight
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let client = RedisClient(
            configuration: RedisConfiguration(port: port, poolSize: poolSize, commandTimeout: .seconds(1)), eventLoopGroup: group
        )
        client.start()
        _ = try client.gcra(key: "rl:bench:warm", emissionIntervalMicros: 1, burst: 1_000_000, maxDelayMicros: 0).wait()

        let decisions = NIOLockedValueBox(0)
        let errors = NIOLockedValueBox(0)
        let stopAt = NIODeadline.now() + .seconds(seconds)

        @Sendable func loop(_ eventLoop: any EventLoop, _ key: Int, _ done: EventLoopPromise<Void>) {
            guard NIODeadline.now() < stopAt else { return done.succeed() }
            client.gcra(key: "rl:bench:\(key % 1000)", emissionIntervalMicros: 1, burst: 1_000_000, maxDelayMicros: 0).hop(to: eventLoop)
                .whenComplete { result in
                    switch result {
                    case .success: decisions.withLockedValue { $0 += 1 }
                    case .failure: errors.withLockedValue { $0 += 1 }
                    }
                    loop(eventLoop, key + 7, done)
                }
        }

        let flushesBefore = client.statistics.flushCount
        let started = NIODeadline.now()
        var chains: [EventLoopFuture<Void>] = []
        for (index, eventLoop) in group.makeIterator().enumerated() {
            for chain in 0..<inFlight {
                let promise = eventLoop.makePromise(of: Void.self)
                eventLoop.execute { loop(eventLoop, index * 100_003 + chain, promise) }
                chains.append(promise.futureResult)
            }
        }
        try EventLoopFuture.andAllSucceed(chains, on: group.next()).wait()
        let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        let count = decisions.withLockedValue { $0 }
        let flushes = client.statistics.flushCount - flushesBefore
        print("pool_size=\(poolSize) in_flight=\(2 * inFlight): \(Int(Double(count) / elapsed)) decisions/s, "
            + "\((Double(flushes) / Double(max(count, 1)) * 1000).rounded() / 1000) writes (round trips) per decision, errors \(errors.withLockedValue { $0 })")
        try client.shutdown().wait()
        try group.syncShutdownGracefully()
    }
}
