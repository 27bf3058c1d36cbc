import Foundation
import GatehouseTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import GatehouseRedis

/// The client against a real redis-server: reply types, pipelining, AUTH, timeouts, outages, scripts.
@Suite(.serialized) struct RedisClientTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    func client(_ configuration: RedisConfiguration) async throws -> RedisClient {
        let client = RedisClient(configuration: configuration, eventLoopGroup: group)
        client.start()
        return client
    }

    @Test(arguments: [true, false])
    func everyReplyTypeThroughRealCommands(resp3: Bool) async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let connection = try await RedisConnection.connect(configuration: server.configuration { $0.resp3 = resp3; $0.commandTimeout = .seconds(2) }, on: group.next()).get()
        defer { _ = connection.close() }
        #expect(connection.protocolVersion == (resp3 ? 3 : 2))

        #expect(try await connection.send(["SET", "k", "v"]).get() == .simpleString("OK"))
        #expect(try await connection.send(["GET", "k"]).get() == .bulkString(ByteBuffer(string: "v")))
        #expect(try await connection.send(["GET", "missing"]).get() == .null)
        #expect(try await connection.send(["INCRBY", "n", "41"]).get() == .integer(41))
        #expect(try await connection.send(["RPUSH", "list", "a", "b"]).get() == .integer(2))
        #expect(try await connection.send(["LRANGE", "list", "0", "-1"]).get() == .array([.bulkString(ByteBuffer(string: "a")), .bulkString(ByteBuffer(string: "b"))]))
        let wrongType = await #expect(throws: RedisError.self) { try await connection.send(["INCR", "list"]).get() }
        #expect(wrongType?.serverErrorCode == "WRONGTYPE")

        _ = try await connection.send(["HSET", "h", "f", "1"]).get()
        let hash = try await connection.send(["HGETALL", "h"]).get()
        _ = try await connection.send(["SADD", "s", "x"]).get()
        let set = try await connection.send(["SMEMBERS", "s"]).get()
        _ = try await connection.send(["ZADD", "z", "1.5", "m"]).get()
        let score = try await connection.send(["ZSCORE", "z", "m"]).get()
        let lua = try await connection.send(["EVAL", "return redis.setresp(3) or {double=3.25}", "0"]).get()
        let bool = try await connection.send(["EVAL", "redis.setresp(3); return true", "0"]).get()
        let info = try await connection.send(["LOLWUT", "VERSION", "5"]).get()
        let bigNumber = try await connection.send(["EVAL", "redis.setresp(3); return {big_number='123456789012345678901234567890'}", "0"]).get()
        let null = try await connection.send(["EVAL", "redis.setresp(3); return nil", "0"]).get()
        if resp3 {
            #expect(hash == .map([RESPMapEntry(key: .bulkString(ByteBuffer(string: "f")), value: .bulkString(ByteBuffer(string: "1")))]))
            #expect(set == .set([.bulkString(ByteBuffer(string: "x"))]))
            #expect(score == .double(1.5))
            #expect(lua == .double(3.25))
            #expect(bool == .boolean(true))
            #expect({ if case .verbatimString(let format, _) = info { return format == "txt" } else { return false } }())
            #expect(bigNumber == .bigNumber("123456789012345678901234567890"))
        } else {
            #expect(hash == .array([.bulkString(ByteBuffer(string: "f")), .bulkString(ByteBuffer(string: "1"))]))
            #expect(set == .array([.bulkString(ByteBuffer(string: "x"))]))
            #expect(score == .bulkString(ByteBuffer(string: "1.5")))
            #expect(lua == .bulkString(ByteBuffer(string: "3.25")))
            #expect(bool == .integer(1))
            #expect(info.string?.contains("Redis") == true)
            #expect(bigNumber == .bulkString(ByteBuffer(string: "123456789012345678901234567890")))
        }
        #expect(null == .null)
    }

    @Test func aThousandPipelinedCommandsAnswerInOrder() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = try await client(server.configuration { $0.poolSize = 1; $0.commandTimeout = .seconds(5) })
        defer { _ = client.shutdown() }
        _ = try await client.send(["PING"]).get()
        let flushesBefore = client.statistics.flushCount
        // Sent from the connection's own loop in one go, so they share writes: pipelined, not one round trip each.
        let loop = group.next()
        let futures = try await loop.submit { (0..<1000).map { client.send(["ECHO", "message-\($0)"]) } }.get()
        let replies = try await EventLoopFuture.whenAllSucceed(futures, on: loop).get()
        #expect(replies.map(\.string) == (0..<1000).map { "message-\($0)" })
        let flushes = client.statistics.flushCount - flushesBefore
        #expect(flushes >= 1 && flushes < 100, "1000 commands took \(flushes) writes")
    }

    @Test func authWithPasswordAndWithAnACLUser() async throws {
        let server = try await RedisServer.start(arguments: ["--requirepass", "s3cret-pass"])
        defer { server.stop() }
        try server.cli(["ACL", "SETUSER", "limiter", "on", ">user-pass", "~rl:*", "+@all"], password: "s3cret-pass")

        let right = try await RedisConnection.connect(configuration: server.configuration { $0.password = "s3cret-pass" }, on: group.next()).get()
        #expect(try await right.send(["PING"]).get() == .simpleString("PONG"))
        _ = try await right.close().get()

        let user = try await RedisConnection.connect(configuration: server.configuration { $0.username = "limiter"; $0.password = "user-pass" }, on: group.next()).get()
        #expect(try await user.send(["SET", "rl:a", "1"]).get() == .simpleString("OK"))
        let denied = await #expect(throws: RedisError.self) { try await user.send(["SET", "other", "1"]).get() }
        #expect(denied?.serverErrorCode == "NOPERM")
        _ = try await user.close().get()

        let wrong = await #expect(throws: RedisError.self) {
            try await RedisConnection.connect(configuration: server.configuration { $0.password = "wrong-pass" }, on: group.next()).get()
        }
        #expect(wrong?.serverErrorCode == "WRONGPASS")
        #expect(wrong.map { !"\($0)".contains("wrong-pass") } == true, "the password must not appear in the error")

        let none = await #expect(throws: RedisError.self) {
            let connection = try await RedisConnection.connect(configuration: server.configuration(), on: group.next()).get()
            _ = try await connection.send(["GET", "x"]).get()
        }
        #expect(none?.serverErrorCode == "NOAUTH")
    }

    @Test func selectsTheDatabaseOfTheConfiguration() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let connection = try await RedisConnection.connect(configuration: server.configuration { $0.database = 3 }, on: group.next()).get()
        _ = try await connection.send(["SET", "in-three", "yes"]).get()
        _ = try await connection.close().get()
        #expect(try server.cli(["-n", "3", "GET", "in-three"]) == "yes")
        #expect(try server.cli(["GET", "in-three"]) == "")
    }

    @Test func aLateReplyTimesOutAndThePoolRecovers() async throws {
        let server = try await RedisServer.start(arguments: ["--enable-debug-command", "yes"])
        defer { server.stop() }
        let client = try await client(server.configuration { $0.poolSize = 1; $0.commandTimeout = .milliseconds(50) })
        defer { _ = client.shutdown() }
        _ = try await client.send(["PING"]).get()

        let started = ContinuousClock.now
        let error = await #expect(throws: RedisError.self) { try await client.send(["DEBUG", "SLEEP", "0.3"]).get() }
        let elapsed = ContinuousClock.now - started
        #expect(error?.code == .timeout)
        #expect(elapsed < .milliseconds(250), "timed out after \(elapsed), the timeout is 50 ms")

        // The connection that timed out was closed (its late reply would be mismatched) and replaced.
        let recovered = await eventually(timeout: .seconds(5)) { (try? await client.send(["ECHO", "after"]).get())?.string == "after" }
        #expect(recovered)
    }

    @Test func serverStoppedFailsFastAndRestartedIsReconnected() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = try await client(server.configuration {
            $0.poolSize = 2; $0.commandTimeout = .milliseconds(200); $0.reconnectBackoffMaximum = .milliseconds(200)
        })
        defer { _ = client.shutdown() }
        #expect(try await client.send(["SET", "before", "1"]).get() == .simpleString("OK"))

        server.stop(keepDirectory: true)
        #expect(await eventually(timeout: .seconds(5)) { !client.isConnected })
        for _ in 0..<20 {
            let started = ContinuousClock.now
            let error = await #expect(throws: RedisError.self) { try await client.send(["PING"]).get() }
            #expect([.unavailable, .connectionClosed].contains(error?.code))
            #expect(ContinuousClock.now - started < .milliseconds(150), "a command during an outage must fail fast")
        }

        try await server.start()  // same port
        let back = await eventually(timeout: .seconds(10)) { (try? await client.send(["PING"]).get()) == .simpleString("PONG") }
        #expect(back, "the pool did not reconnect by itself")
    }

    @Test func noscriptAfterScriptFlushReloadsTransparently() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let client = try await client(server.configuration { $0.poolSize = 1; $0.commandTimeout = .seconds(2) })
        defer { _ = client.shutdown() }
        let script = RedisScript("return tonumber(ARGV[1]) * 2")
        // One loop, so one connection (pool_size 1 per loop): the one whose loaded script the flush removes.
        let loop = group.next()
        #expect(try await client.evaluate(script, keys: [], arguments: ["21"], on: loop).get() == .integer(42))
        #expect(try server.cli(["SCRIPT", "EXISTS", script.sha1]) == "1")

        #expect(try server.cli(["SCRIPT", "FLUSH"]) == "OK")
        #expect(try server.cli(["SCRIPT", "EXISTS", script.sha1]) == "0")
        #expect(try await client.evaluate(script, keys: [], arguments: ["5"], on: loop).get() == .integer(10))
        #expect(try server.cli(["SCRIPT", "EXISTS", script.sha1]) == "1")
        #expect(try await client.evaluate(script, keys: [], arguments: ["6"], on: loop).get() == .integer(12))
        // The reload came from the NOSCRIPT retry on the same connection (a new connection would load it first).
        let noscripts = try server.cli(["INFO", "errorstats"])
        #expect(noscripts.contains("errorstat_NOSCRIPT:count=1"), "\(noscripts)")
    }
}
