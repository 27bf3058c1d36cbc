import GatehouseObservability
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// Tells connections to finish their exchange and close (graceful shutdown).
struct DrainEvent: Sendable {}

/// The gateway's listeners and data path, as a `Service`: binds every listener, serves until graceful shutdown,
/// then stops accepting, lets in-flight exchanges finish (up to the drain timeout) and closes the rest.
public final class GatewayServer: Service, Sendable {
    /// Listener settings the server needs at bind time.
    public struct Listener: Sendable {
        public var host: String
        public var port: Int
        /// TLS 1.2+ with these PEM files; nil for plain HTTP.
        public var tls: TLS?

        public struct TLS: Sendable {
            public var certificateFile: String
            public var privateKeyFile: String
            /// Offer `h2` by ALPN (else only `http/1.1`).
            public var http2: Bool
            public init(certificateFile: String, privateKeyFile: String, http2: Bool) {
                self.certificateFile = certificateFile
                self.privateKeyFile = privateKeyFile
                self.http2 = http2
            }
        }

        public init(host: String, port: Int, tls: TLS? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
        }
    }

    public struct Settings: Sendable {
        public var listeners: [Listener]
        public var eventLoopThreads: Int
        public var maxHeaderBytesHardLimit: Int
        public var maxHeaderCountHardLimit: Int
        public var idleTimeout: TimeAmount
        public var drainTimeout: TimeAmount

        public init(listeners: [Listener], eventLoopThreads: Int, maxHeaderBytesHardLimit: Int, maxHeaderCountHardLimit: Int, idleTimeout: TimeAmount, drainTimeout: TimeAmount) {
            self.listeners = listeners
            self.eventLoopThreads = eventLoopThreads
            self.maxHeaderBytesHardLimit = maxHeaderBytesHardLimit
            self.maxHeaderCountHardLimit = maxHeaderCountHardLimit
            self.idleTimeout = idleTimeout
            self.drainTimeout = drainTimeout
        }
    }

    let settings: Settings
    public let runtime: GatewayRuntime
    let logger: Logger
    let onListening: @Sendable ([Int]) -> Void
    private let connections = NIOLockedValueBox([ObjectIdentifier: any Channel]())
    private let ready = NIOLockedValueBox(false)
    /// The running server's per-loop states (nil before `run` and after it ends).
    private let loopStates = NIOLockedValueBox<LoopStates?>(nil)

    /// The access log's writer (nil: none); closed, after the drain wrote every line, when the server stops.
    let accessLog: AccessLogWriter?
    /// Bound listeners by local port → the `listener` label (`host:port`).
    private let listenerLabels = NIOLockedValueBox<[Int: String]>([:])

    public init(
        settings: Settings, gateway: CompiledGateway, logger: Logger, accessLog: AccessLogWriter? = nil, onListening: @escaping @Sendable ([Int]) -> Void = { _ in }
    ) {
        self.accessLog = accessLog
        self.settings = settings
        self.runtime = GatewayRuntime(gateway)
        self.logger = logger
        self.onListening = onListening
    }

    /// True once every listener is bound and, when tokens are checked, the authorization server has been discovered.
    public var isReady: Bool { ready.withLockedValue { $0 } && (runtime.snapshot.tokenValidator?.isReady ?? true) }

    /// Finished exchanges, summed over the event loops' own counters (each read on its loop).
    func exchangeCounters(on eventLoop: any EventLoop) -> EventLoopFuture<OutcomeCounters> {
        guard let loops = loopStates.withLockedValue({ $0 }) else { return eventLoop.makeSucceededFuture(OutcomeCounters()) }
        return loops.collect(on: eventLoop) { $0.outcomes }.map { all in
            all.reduce(into: OutcomeCounters()) { $0.add($1) }
        }
    }

    /// The running server's loop states, for the scrape.
    var currentLoopStates: LoopStates? { loopStates.withLockedValue { $0 } }

    /// Open client connections per listener (`host:port`), counted at scrape time from the connections' local
    /// addresses (nothing is counted per connection).
    func listenerConnectionCounts() -> [(String, Int)] {
        let labels = listenerLabels.withLockedValue { $0 }
        var counts = Dictionary(uniqueKeysWithValues: labels.values.map { ($0, 0) })
        for channel in connections.withLockedValue({ Array($0.values) }) {
            if let port = channel.localAddress?.port, let label = labels[port] { counts[label, default: 0] += 1 }
        }
        return counts.sorted { $0.key < $1.key }
    }

    /// Open downstream connections.
    public var connectionCount: Int { connections.withLockedValue { $0.count } }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: settings.eventLoopThreads)
        let loops = LoopStates(group: group, accessLog: accessLog)
        loopStates.withLockedValue { $0 = loops }
        defer { loopStates.withLockedValue { $0 = nil } }
        var serverChannels: [any Channel] = []
        do {
            for listener in settings.listeners {
                serverChannels.append(try await bind(listener, group: group, loops: loops))
            }
        } catch {
            for channel in serverChannels { try? await channel.close() }
            try? await group.shutdownGracefully()
            throw error
        }
        let ports = serverChannels.compactMap { $0.localAddress?.port }
        listenerLabels.withLockedValue { labels in
            for (listener, port) in zip(settings.listeners, ports) { labels[port] = "\(listener.host):\(port)" }
        }
        ready.withLockedValue { $0 = true }
        logger.notice("gateway listening", metadata: ["ports": "\(ports)"])
        onListening(ports)

        // Serve until graceful shutdown (SIGTERM) or cancellation.
        try? await gracefulShutdown()

        ready.withLockedValue { $0 = false }
        logger.notice("gateway draining", metadata: ["connections": "\(connectionCount)"])
        for channel in serverChannels { try? await channel.close() }
        for channel in connections.withLockedValue({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(DrainEvent())
            // HTTP/2: the connection handler answers this with GOAWAY and closes once open streams finish.
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = ContinuousClock.now + .nanoseconds(settings.drainTimeout.nanoseconds)
        while connectionCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let remaining = connections.withLockedValue { Array($0.values) }
        if !remaining.isEmpty { logger.warning("drain timeout: closing connections", metadata: ["connections": "\(remaining.count)"]) }
        for channel in remaining { channel.close(promise: nil) }
        loops.forEach { state in
            state.pool.closeIdle()
            state.stopTicker()
        }
        // Every exchange has ended: the loops' last access-log lines go to the writer, which writes them and closes.
        if let accessLog {
            _ = try? await loops.collect(on: group.next()) { $0.flushAccessLog() }.get()
            accessLog.close()
        }
        try? await Task.sleep(for: .milliseconds(50))
        try await group.shutdownGracefully()
        logger.notice("gateway stopped")
    }

    private func bind(_ listener: Listener, group: any EventLoopGroup, loops: LoopStates) async throws -> any Channel {
        let runtime = self.runtime
        let settings = self.settings
        let connections = self.connections
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = settings.maxHeaderBytesHardLimit
        limits.maxHeaderFieldSize = settings.maxHeaderBytesHardLimit
        limits.maxHeaderFieldCount = settings.maxHeaderCountHardLimit
        let decoderLimits = limits
        let sslContext: NIOSSLContext? = try listener.tls.map { tls in
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.privateKeyFile, format: .pem))
            )
            configuration.minimumTLSVersion = .tlsv12
            configuration.applicationProtocols = tls.http2 ? ["h2", "http/1.1"] : ["http/1.1"]
            return try NIOSSLContext(configuration: configuration)
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 64 * 1024))
            .childChannelOption(ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let key = ObjectIdentifier(channel)
                    connections.withLockedValue { $0[key] = channel }
                    channel.closeFuture.whenComplete { _ in connections.withLockedValue { _ = $0.removeValue(forKey: key) } }
                    let scheme = sslContext == nil ? "http" : "https"
                    if let sslContext {
                        // Connection-level idle timeout for TLS connections: covers handshakes that never finish and
                        // HTTP/2 connections (whose streams have their own handlers but no connection-level clock).
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: settings.idleTimeout))
                        try channel.pipeline.syncOperations.addHandler(IdleConnectionCloser())
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    guard sslContext != nil, listener.tls?.http2 == true else {
                        try Self.configureHTTP1(channel, runtime: runtime, loops: loops, scheme: scheme, limits: decoderLimits)
                        return
                    }
                }.flatMap {
                    guard sslContext != nil, listener.tls?.http2 == true else { return channel.eventLoop.makeSucceededVoidFuture() }
                    // ALPN: h2 streams each get the HTTP/2-to-HTTP/1 codec and their own downstream handler;
                    // http/1.1 gets the plain pipeline.
                    return channel.configureHTTP2SecureUpgrade(
                        h2ChannelConfigurator: { channel in
                            Self.configureHTTP2Connection(channel, drainTimeout: settings.drainTimeout) { stream in
                                stream.eventLoop.makeCompletedFuture {
                                    let downstream = DownstreamHandler(runtime: runtime, loops: loops, scheme: "https", responses: .parts)
                                    try stream.pipeline.syncOperations.addHandler(HTTP2RequestHeadChecker(downstream: downstream))
                                    try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                    try stream.pipeline.syncOperations.addHandler(downstream)
                                }
                            }
                        },
                        http1ChannelConfigurator: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try Self.configureHTTP1(channel, runtime: runtime, loops: loops, scheme: "https", limits: decoderLimits)
                            }
                        }
                    )
                }
            }
        return try await bootstrap.bind(host: listener.host, port: listener.port).get()
    }

    /// The HTTP/1.1 downstream pipeline.
    static func configureHTTP1(_ channel: any Channel, runtime: GatewayRuntime, loops: LoopStates, scheme: String, limits: NIOHTTPDecoderLimitConfiguration) throws {
        let sync = channel.pipeline.syncOperations
        // No response encoder: the downstream handler serializes responses itself (one write per small response).
        let downstream = DownstreamHandler(runtime: runtime, loops: loops, scheme: scheme, responses: .http1Bytes)
        try sync.addHandler(RequestStartDetector(downstream: downstream))
        // Bytes after an upgrade request (the first WebSocket frames) are kept for the tunnel.
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .drop, limitConfiguration: limits)))
        try sync.addHandler(downstream)
    }
}


/// Closes a connection when `IdleStateHandler` reports it idle (no reads or writes for the idle timeout).
final class IdleConnectionCloser: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension IdleConnectionCloser: Sendable {}
