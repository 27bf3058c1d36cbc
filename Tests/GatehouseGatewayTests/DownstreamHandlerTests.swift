import GatehouseConfiguration
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// The gateway's real HTTP/1.1 pipeline (decoder, `DownstreamHandler`, response serializer) on an `EmbeddedChannel`,
/// with upstream connections that are `EmbeddedChannel`s too (the upstream pipeline: encoder, decoder,
/// `UpstreamHandler`), all on one `EmbeddedEventLoop` whose virtual time is the data path's clock. So every test
/// reads the exact bytes the upstream received and the client got, and timeouts fire by `advanceTime`, not by
/// waiting.
final class ProxyHarness {
    let loop = EmbeddedEventLoop()
    let loops: LoopStates
    let downstream: EmbeddedChannel
    let runtime: GatewayRuntime
    let limits: NIOHTTPDecoderLimitConfiguration
    private var extraClients: [EmbeddedChannel] = []

    init(_ yaml: String, compiler: GatewayCompiler = GatewayCompiler()) throws {
        let configuration = try GatewayConfiguration.parse(yaml: yaml)
        let runtime = GatewayRuntime(compiler.compile(configuration))
        self.runtime = runtime
        let loop = self.loop
        loops = LoopStates(group: loop, clock: .manual { loop.now })
        downstream = EmbeddedChannel(loop: loop)
        let settings = GatewayCompiler.settings(configuration, defaultThreads: 1)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = settings.maxHeaderBytesHardLimit
        limits.maxHeaderFieldSize = settings.maxHeaderBytesHardLimit
        limits.maxHeaderFieldCount = settings.maxHeaderCountHardLimit
        self.limits = limits
        // Connected first, as a real accepted channel is when its pipeline is set up (the handler reads the peer then).
        try downstream.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        try GatewayServer.configureHTTP1(downstream, runtime: runtime, loops: loops, scheme: "http", limits: limits)
    }

    /// Another client connection to the same gateway (same loop, clock and pool), from `port`.
    func anotherClient(port: Int) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port)).wait()
        try GatewayServer.configureHTTP1(channel, runtime: runtime, loops: loops, scheme: "http", limits: limits)
        extraClients.append(channel)
        return channel
    }

    /// Everything the gateway wrote to `client` so far.
    func answer(to client: EmbeddedChannel) throws -> String {
        var text = ""
        while let part = try client.readOutbound(as: ByteBuffer.self) { text += String(buffer: part) }
        return text
    }

    var state: LoopState { loops.state(for: loop) }

    /// An idle upstream connection to `host:port` in the loop's pool; returns its channel.
    @discardableResult
    func upstream(_ port: Int, host: String = "127.0.0.1") throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        let handler = UpstreamHandler()
        try UpstreamPool.configurePipeline(channel, handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: host, port: port)).wait()
        state.pool.adoptIdle(UpstreamConnection(channel: channel, target: TargetKey(host: host, port: port), handler: handler))
        return channel
    }

    func client(_ raw: String) throws {
        try downstream.writeInbound(ByteBuffer(string: raw))
    }

    /// Two pipelined requests whose upstream answers were bodies "1" then "2": the client got both, 200, in that
    /// order, and both exchanges completed.
    func expectTwoPipelinedAnswersInOrder(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let answers = try clientReceived()
        let firstEnd = try #require(answers.range(of: "\r\n\r\n1"), sourceLocation: sourceLocation)
        #expect(answers[firstEnd.upperBound...].hasPrefix("HTTP/1.1 200 OK"), "\(answers)", sourceLocation: sourceLocation)
        #expect(answers.hasSuffix("\r\n\r\n2"), sourceLocation: sourceLocation)
        #expect(state.outcomes.completed == 2, sourceLocation: sourceLocation)
    }

    /// Everything the gateway wrote to the client so far.
    func clientReceived() throws -> String {
        var text = ""
        while let part = try downstream.readOutbound(as: ByteBuffer.self) { text += String(buffer: part) }
        return text
    }

    /// Everything the gateway wrote to an upstream so far.
    func received(by upstream: EmbeddedChannel) throws -> String {
        var text = ""
        while let part = try upstream.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = part { text += String(buffer: buffer) }
        }
        return text
    }

    func respond(on upstream: EmbeddedChannel, _ raw: String) throws {
        try upstream.writeInbound(ByteBuffer(string: raw))
    }

    func advance(_ amount: TimeAmount) {
        loop.advanceTime(by: amount)
    }

    deinit {
        for client in extraClients { _ = try? client.finish() }
        _ = try? downstream.finish()
    }
}

@Suite struct DownstreamHandlerTests {
    static let yaml = """
        listeners: [{port: 8080}]
        limits: {header_read_timeout: 1s, idle_timeout: 5s}
        clusters:
          - {name: one, targets: ['http://127.0.0.1:9001']}
          - {name: two, targets: ['http://127.0.0.1:9001', 'http://127.0.0.1:9002'], retries: {attempts: 2}}
        routes:
          - {name: api, match: {path_prefix: /api}, cluster: one, timeouts: {per_try: 2s, total: 4s}}
          - {name: retried, match: {path_prefix: /retry}, cluster: two}
        """

    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    @Test func aRequestIsForwardedAndItsResponseRelayed() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/./x//y?q=1 HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: abc-1\r\n\r\n")
        let sent = try proxy.received(by: upstream)
        #expect(sent.hasPrefix("GET /api/x/y?q=1 HTTP/1.1\r\nHost: a.example\r\n"), "\(sent)")
        #expect(sent.contains("\r\nX-Forwarded-For: 127.0.0.1\r\n"))
        #expect(sent.contains("\r\nX-Request-Id: abc-1\r\n"))
        #expect(sent.hasSuffix("\r\n\r\n"))
        try proxy.respond(on: upstream, Self.ok)
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(answer)")
        #expect(answer.contains("\r\nVia: 1.1 gatehouse\r\n"))
        #expect(answer.contains("\r\nX-Request-Id: abc-1\r\n"))
        #expect(answer.hasSuffix("\r\n\r\nok"))
        let outcomes = proxy.state.outcomes
        #expect(outcomes.total == 1 && outcomes.completed == 1 && outcomes.byStatusClass[2] == 1)
        #expect(proxy.state.pool.idleConnections(TargetKey(host: "127.0.0.1", port: 9001)) == 1)  // back in the pool
    }

    @Test func pipelinedRequestsWaitForTheResponseBeforeThem() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/first HTTP/1.1\r\nHost: a\r\n\r\nGET /api/second HTTP/1.1\r\nHost: a\r\n\r\n")
        let first = try proxy.received(by: upstream)
        #expect(first.hasPrefix("GET /api/first ") && !first.contains("/api/second"), "\(first)")
        try proxy.respond(on: upstream, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        let second = try proxy.received(by: upstream)
        #expect(second.hasPrefix("GET /api/second "), "\(second)")
        try proxy.respond(on: upstream, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        try proxy.expectTwoPipelinedAnswersInOrder()
    }

    @Test func aRefusalBeforeRoutingEndsInTheOneExitToo() throws {
        let proxy = try ProxyHarness(Self.yaml)
        try proxy.client("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 404 "), "\(answer)")
        #expect(answer.contains("\"error\":\"not_found\""))
        #expect(proxy.state.outcomes.refused == 1 && proxy.state.outcomes.byStatusClass[4] == 1)
    }

    @Test func thePerTryTimeoutFiresOnTheInjectedClock() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try proxy.received(by: upstream).hasPrefix("GET /api/slow "))
        proxy.advance(.milliseconds(1900))
        #expect(try proxy.clientReceived().isEmpty)  // not yet: 2 s per try
        proxy.advance(.milliseconds(300))
        let answer = try proxy.clientReceived()
        #expect(answer.hasPrefix("HTTP/1.1 504 "), "\(answer)")
        #expect(answer.contains("within 2000 ms"))
        #expect(!upstream.isActive)  // the abandoned upstream connection is closed, not reused
        #expect(proxy.state.outcomes.upstreamFailures == 1)
    }

    @Test func aSlowHeadIsCutOffAtTheHeaderReadTimeout() throws {
        let proxy = try ProxyHarness(Self.yaml)
        try proxy.client("GET /api/x HTTP/1.1\r\nHost: a\r\n")
        proxy.advance(.milliseconds(900))
        #expect(proxy.downstream.isActive)
        proxy.advance(.milliseconds(300))
        #expect(!proxy.downstream.isActive)
    }

    @Test func anIdleConnectionClosesAfterTheIdleTimeout() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        try proxy.respond(on: upstream, Self.ok)
        _ = try proxy.clientReceived()
        proxy.advance(.seconds(4))
        #expect(proxy.downstream.isActive)
        proxy.advance(.milliseconds(1200))
        #expect(!proxy.downstream.isActive)
    }

    @Test func aResetBeforeTheResponseIsRetriedOnAnotherTarget() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let first = try proxy.upstream(9001)
        let second = try proxy.upstream(9002)
        try proxy.client("GET /retry/x HTTP/1.1\r\nHost: a\r\n\r\n")
        let firstGot = try proxy.received(by: first)
        let secondGot = try proxy.received(by: second)
        // Round robin sends it to one of them; that one resets.
        let (failing, other) = firstGot.isEmpty ? (second, first) : (first, second)
        #expect((firstGot + secondGot).hasPrefix("GET /retry/x "))
        try failing.close().wait()
        let retried = try proxy.received(by: other)
        #expect(retried.hasPrefix("GET /retry/x "), "\(retried)")
        try proxy.respond(on: other, Self.ok)
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 200 "))
        #expect(proxy.state.outcomes.completed == 1 && proxy.state.outcomes.total == 1)
    }

    @Test func aBodyIsFramedByTheGatewayNotByTheClientsConnectionHeader() throws {
        let proxy = try ProxyHarness(Self.yaml)
        let upstream = try proxy.upstream(9001)
        try proxy.client("POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        let sent = try proxy.received(by: upstream)
        #expect(sent.contains("\r\nContent-Length: 5\r\n\r\nhello"), "\(sent)")
        try proxy.respond(on: upstream, Self.ok)
        _ = try proxy.clientReceived()
        try proxy.client("POST /api/y HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello")
        #expect(try proxy.clientReceived().hasPrefix("HTTP/1.1 400 "))
        #expect(try proxy.received(by: upstream).isEmpty)
    }
}
