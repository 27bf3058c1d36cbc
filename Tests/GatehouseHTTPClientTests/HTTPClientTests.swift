@testable import GatehouseHTTPClient
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Testing

@Suite struct HTTPClientTests {
    func origin(_ server: TestServer) -> HTTPOrigin { HTTPOrigin(host: "127.0.0.1", port: server.port, isTLS: false) }

    @Test func sequentialCallsShareOneConnection() async throws {
        let server = try await TestServer { index, _ in .respond("answer \(index)") }
        let client = HTTPClient()
        for index in 0..<5 {
            let response = try await client.execute(HTTPClientRequest(origin: origin(server), path: "/n"), timeout: .seconds(5))
            #expect(response.status == 200)
            #expect(response.text == "answer \(index)")
        }
        #expect(server.acceptedConnections == 1)
        #expect(client.openedConnections == 1)
        #expect(server.requests.count == 5)
        #expect(server.requests.allSatisfy { $0.headers.first(name: "host") == "127.0.0.1:\(server.port)" && !$0.headers.contains(name: "connection") })
        client.shutdown()
        await server.stop()
    }

    @Test func aStalePooledConnectionIsRetriedOnceForAnIdempotentRequest() async throws {
        // The server answers the first request of a connection and closes the connection on the second without an
        // answer: what a client sees when a server's keep-alive timeout fires just as it reuses the connection.
        let server = try await TestServer { index, _ in index == 0 ? .respond("fresh") : .close }
        let client = HTTPClient()
        #expect(try await client.execute(HTTPClientRequest(origin: origin(server)), timeout: .seconds(5)).text == "fresh")
        #expect(client.idleConnections == 1)
        #expect(try await client.execute(HTTPClientRequest(origin: origin(server)), timeout: .seconds(5)).text == "fresh")
        #expect(server.acceptedConnections == 2)
        #expect(server.requests.count == 3)
        client.shutdown()
        await server.stop()
    }

    @Test func aNonIdempotentRequestIsNotRetriedUnlessAllowed() async throws {
        let server = try await TestServer { index, _ in index == 0 ? .respond("fresh") : .close }
        let client = HTTPClient()
        _ = try await client.execute(HTTPClientRequest(origin: origin(server), method: .POST), timeout: .seconds(5))
        await #expect(throws: HTTPClientError(.connectionClosed, "")) {
            try await client.execute(HTTPClientRequest(origin: origin(server), method: .POST), timeout: .seconds(5))
        }
        #expect(server.acceptedConnections == 1)
        // Allowed explicitly (a token exchange, which has no effect beyond its answer).
        _ = try await client.execute(HTTPClientRequest(origin: origin(server), method: .POST), timeout: .seconds(5))
        var request = HTTPClientRequest(origin: origin(server), method: .POST)
        request.retryOnStaleConnection = true
        #expect(try await client.execute(request, timeout: .seconds(5)).text == "fresh")
        #expect(server.acceptedConnections == 3)
        client.shutdown()
        await server.stop()
    }

    @Test func aServerThatDoesNotAnswerTimesOut() async throws {
        let server = try await TestServer { _, _ in .hang }
        let client = HTTPClient()
        let started = ContinuousClock.now
        await #expect(throws: HTTPClientError(.timeout, "")) {
            try await client.execute(HTTPClientRequest(origin: origin(server)), timeout: .milliseconds(200))
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .milliseconds(190))
        #expect(elapsed < .seconds(2))
        #expect(client.idleConnections == 0)
        client.shutdown()
        await server.stop()
    }

    @Test func aResponseOverTheSizeCapFails() async throws {
        let server = try await TestServer { _, _ in .respond(String(repeating: "x", count: 5000)) }
        let small = HTTPClient(configuration: .init(responseSizeLimit: 4096))
        await #expect(throws: HTTPClientError(.responseTooLarge, "")) {
            try await small.execute(HTTPClientRequest(origin: origin(server)), timeout: .seconds(5))
        }
        let large = HTTPClient(configuration: .init(responseSizeLimit: 5000))
        #expect(try await large.execute(HTTPClientRequest(origin: origin(server)), timeout: .seconds(5)).body.readableBytes == 5000)
        small.shutdown()
        large.shutdown()
        await server.stop()
    }

    @Test func aConnectionRefusedFailsAsConnectFailed() async throws {
        let server = try await TestServer { _, _ in .hang }
        let port = server.port
        await server.stop()
        await #expect(throws: HTTPClientError(.connectFailed, "")) {
            try await HTTPClient().execute(HTTPClientRequest(origin: HTTPOrigin(host: "127.0.0.1", port: port, isTLS: false)), timeout: .seconds(2))
        }
    }

    @Test func aUTF8SequenceSplitAcrossReadsStaysWhole() throws {
        let channel = EmbeddedChannel(handler: HTTPClientConnectionHandler())
        let promise = channel.eventLoop.makePromise(of: CompletedExchange.self)
        try channel.writeOutbound(PendingRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), body: nil, promise: promise, sizeLimit: 1024))
        let bytes = Array("café ☕".utf8)
        // Split inside "é" (C3 A9) and inside "☕" (E2 98 95).
        let cuts = [4, 8, bytes.count]
        try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        var start = 0
        for cut in cuts {
            try channel.writeInbound(HTTPClientResponsePart.body(ByteBuffer(bytes: bytes[start..<cut])))
            start = cut
        }
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
        let exchange = try promise.futureResult.wait()
        #expect(exchange.response.text == "café ☕")
        #expect(exchange.reusable)
        _ = try channel.finish()
    }

    @Test func urlsSplitIntoOriginAndTarget() throws {
        #expect(try HTTPURL("http://127.0.0.1:8080/a/b?c=d") == HTTPURL(origin: .init(host: "127.0.0.1", port: 8080, isTLS: false), path: "/a/b?c=d"))
        #expect(try HTTPURL("https://auth.example.com") == HTTPURL(origin: .init(host: "auth.example.com", port: 443, isTLS: true), path: "/"))
        #expect(try HTTPURL("http://[::1]:9/x#frag") == HTTPURL(origin: .init(host: "::1", port: 9, isTLS: false), path: "/x"))
        #expect(throws: HTTPClientError(.invalidURL, "")) { try HTTPURL("ftp://x/") }
        #expect(throws: HTTPClientError(.invalidURL, "")) { try HTTPURL("http://x:0/") }
        #expect(throws: HTTPClientError(.invalidURL, "")) { try HTTPURL("http:///") }
    }
}

@Suite struct IdleConnectionPoolTests {
    final class Connection {}
    let origin = HTTPOrigin(host: "a", port: 1, isTLS: false)

    @Test func takesTheNewestAndExpiresTheOld() {
        var pool = IdleConnectionPool<Connection>(maximumIdlePerOrigin: 2, idleTimeoutNanoseconds: 100)
        let (a, b, c) = (Connection(), Connection(), Connection())
        let keptA = pool.release(a, id: ObjectIdentifier(a), origin: origin, now: 0)
        let keptB = pool.release(b, id: ObjectIdentifier(b), origin: origin, now: 50)
        let keptC = pool.release(c, id: ObjectIdentifier(c), origin: origin, now: 60)
        #expect(keptA && keptB && !keptC)
        let (taken, closed) = pool.take(origin, now: 120)
        #expect(taken === b)
        #expect(closed.count == 1 && closed[0] === a)
        #expect(pool.count == 0)
        let again = pool.take(origin, now: 130)
        #expect(again.connection == nil)
    }

    @Test func anIdleTimerRemovesOnlyTheReleaseItWasSetFor() {
        var pool = IdleConnectionPool<Connection>(maximumIdlePerOrigin: 2, idleTimeoutNanoseconds: 100)
        let a = Connection()
        _ = pool.release(a, id: ObjectIdentifier(a), origin: origin, now: 0)
        let taken = pool.take(origin, now: 10).connection
        #expect(taken === a)
        _ = pool.release(a, id: ObjectIdentifier(a), origin: origin, now: 20)
        let stale = pool.removeIfIdleSince(0, id: ObjectIdentifier(a), origin: origin)
        #expect(stale == nil)
        let current = pool.removeIfIdleSince(20, id: ObjectIdentifier(a), origin: origin)
        #expect(current === a)
        #expect(pool.count == 0)
    }
}
