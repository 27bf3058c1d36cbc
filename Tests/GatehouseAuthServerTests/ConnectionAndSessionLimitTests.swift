import Foundation
import GatehouseTestSupport
import HTTPTypes
import NIOCore
import NIOPosix
import Testing

@testable import GatehouseAuthServer

/// Slowloris and session flooding: the listener's header-read and idle timeouts (real sockets), and anonymous
/// sessions bounded apart from signed-in ones.
@Suite struct ConnectionAndSessionLimitTests {
    /// A raw TCP connection to the server, for requests no HTTP client would send.
    func connect(_ port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "localhost", port: port).get()
    }

    @Test func halfARequestHeadIsDisconnectedAfterTheHeaderReadTimeout() async throws {
        try await withAuthServer(configure: { $0.listen.headerReadTimeout = 1; $0.listen.idleTimeout = 30 }) { client, _, _ in
            let channel = try await connect(try #require(client.port))
            let start = ContinuousClock.now
            try await channel.writeAndFlush(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: localhost\r\n")).get()
            let closed = await eventually(timeout: .seconds(10)) { !channel.isActive }
            let elapsed = ContinuousClock.now - start
            #expect(closed, "a half-sent head kept its connection for 10 s")
            #expect(elapsed >= .milliseconds(900), "closed after \(elapsed), before the header read timeout")
            #expect(elapsed < .seconds(5), "closed after \(elapsed)")
            try? await channel.close().get()
        }
    }

    /// A head trickled a byte at a time keeps sending, so only the header read timeout (counted from its first
    /// byte, not from the last) ends it; the idle timeout alone never would.
    @Test func aTrickledHeadIsCutOffAtTheHeaderReadTimeoutFromItsFirstByte() async throws {
        try await withAuthServer(configure: { $0.listen.headerReadTimeout = 1; $0.listen.idleTimeout = 30 }) { client, _, _ in
            let channel = try await connect(try #require(client.port))
            let start = ContinuousClock.now
            let head = Array("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 400)
            var sent = 0
            while channel.isActive && sent < head.count && ContinuousClock.now - start < .seconds(10) {
                _ = try? await channel.writeAndFlush(ByteBuffer(bytes: head[sent..<sent + 1])).get()
                sent += 1
                try await Task.sleep(for: .milliseconds(50))  // the trickle's pace (the premise is asserted below)
            }
            let closed = await eventually(timeout: .seconds(5)) { !channel.isActive }
            let elapsed = ContinuousClock.now - start
            #expect(closed)
            // The premise: the connection was cut while bytes were still coming (so no idle timeout could have
            // fired), and no earlier than the header read timeout counted from the first byte.
            #expect(sent < head.count, "the whole head was sent before the close: the trickle proved nothing")
            #expect(elapsed >= .milliseconds(900), "closed after \(elapsed), before the header read timeout")
            #expect(elapsed < .seconds(5), "the trickle held the connection for \(elapsed)")
            try? await channel.close().get()
        }
    }

    @Test func anIdleConnectionIsClosedAfterTheIdleTimeoutAndAnAnsweredOneToo() async throws {
        try await withAuthServer(configure: { $0.listen.headerReadTimeout = 5; $0.listen.idleTimeout = 1 }) { client, _, _ in
            let port = try #require(client.port)
            // Nothing sent at all.
            let silent = try await connect(port)
            #expect(await eventually(timeout: .seconds(10)) { !silent.isActive })
            // A request answered, then nothing: the idle timeout counts from the response.
            let answered = try await connect(port)
            try await answered.writeAndFlush(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")).get()
            #expect(await eventually(timeout: .seconds(10)) { !answered.isActive })
        }
    }

    /// The gateway's introspection calls are answered before Hummingbird's codec (the fast path): a connection
    /// busy with them is not idle, whatever Hummingbird saw.
    @Test func aConnectionBusyWithFastPathRequestsIsNotClosedAsIdle() async throws {
        try await withAuthServer(configure: { $0.listen.headerReadTimeout = 1; $0.listen.idleTimeout = 1 }) { client, _, _ in
            let issued = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            let token = try #require(issued.string("access_token"))
            let start = ContinuousClock.now
            var answered = 0
            var last = start
            var longestGap: Duration = .zero
            while ContinuousClock.now - start < .milliseconds(2500) {
                let reply = try await client.send(
                    .post, "/introspect", headers: [.authorization: "Basic " + Data("gatehouse-gateway:gatehouse-gateway-secret".utf8).base64EncodedString()],
                    form: [("token", token)]
                )
                #expect(reply.json["active"] as? Bool == true, "\(reply.text)")
                answered += 1
                let now = ContinuousClock.now
                longestGap = max(longestGap, now - last)
                last = now
                try await Task.sleep(for: .milliseconds(200))  // the pace of a quiet gateway (the premise is asserted below)
            }
            #expect(answered >= 5)
            // The premise: the connection lived past the idle timeout (1 s) while no gap between requests reached it.
            #expect(ContinuousClock.now - start >= .milliseconds(2500))
            #expect(longestGap < .seconds(1), "a gap of \(longestGap) between requests: the test proved nothing")
        }
    }

    @Test func aFloodOfAnonymousSessionsLeavesASignedInSessionIntact() async throws {
        try await withAuthServer(configure: { $0.login.maxAnonymousSessions = 5 }) { client, _, _ in
            let flow = AuthorizationFlowTests()
            let url = flow.authorizeURL(client: "demo-web", redirect: AuthorizationFlowTests.webRedirect)
            let (_, session) = try await flow.signIn(client, url: url)
            for _ in 0..<50 {
                let anonymous = try await client.send(.get, flow.authorizeURL())
                #expect(anonymous.location?.hasPrefix("/login?request=") == true)
            }
            // Still signed in: consent remembered, straight back to the client with a code.
            let again = try await client.send(.get, url, cookie: session)
            #expect(again.location?.hasPrefix(AuthorizationFlowTests.webRedirect + "?code=") == true, "\(again.location ?? again.text)")
        }
    }

    @Test func sessionTiersAreBoundedApart() async throws {
        let store = SessionStore(lifetime: 3600, maxSignedIn: 3, maxAnonymous: 10)
        let anonymous = try await store.create(now: 0)
        let signedIn = try await store.signIn(replacing: anonymous.id, userID: "u1", username: "alice", now: 0).id
        #expect(try await store.session(id: anonymous.id, now: 1) == nil)  // no fixation: the old id is gone
        var first: String?
        for index in 0..<10_000 {
            let created = try await store.create(now: 1)
            if index == 0 { first = created.id }
        }
        #expect(store.counts.anonymous == 10)
        #expect(store.counts.signedIn == 1)
        #expect(try await store.session(id: signedIn, now: 2)?.userID == "u1")
        #expect(try await store.session(id: first, now: 2) == nil)  // the oldest anonymous ones went
        #expect(try await store.signOut(id: signedIn))
        #expect(try await store.session(id: signedIn, now: 2) == nil)
        #expect(try await store.signOut(id: signedIn) == false)
    }

    @Test func boundedExpiringMapEvictsAndPurgesFromTheFront() {
        var map = BoundedExpiringMap<Int>(capacity: 3)
        for index in 0..<5 { map.insert("k\(index)", index, expiresAt: 100 + index) }
        #expect(map.count == 3)
        #expect(map.value("k0", now: 0) == nil)
        #expect(map.value("k4", now: 0) == 4)
        map.remove("k3")
        map.insert("k5", 5, expiresAt: 105)
        #expect(map.count == 3)
        #expect(map.value("k2", now: 0) == 2)  // the removal made room: nothing else was dropped
        map.purge(now: 102)
        #expect(map.value("k2", now: 0) == nil)
        #expect(map.count == 2)
        #expect(map.value("k5", now: 105) == nil)  // expired on lookup
        // Many removals do not grow the queue without bound.
        for index in 0..<10_000 {
            map.insert("r\(index)", index, expiresAt: 1000)
            map.remove("r\(index)")
        }
        #expect(map.count <= 3)
    }
}
