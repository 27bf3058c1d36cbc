import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The gateway's internal HTTP/1.1 client (discovery, token exchange, introspection, JWKS) and the one
/// `GatehouseServiceAuth` fetches key sets with: requests are sent whole and answered whole, on keep-alive
/// connections reused per origin (a cache miss at the gateway no longer pays a TCP and TLS handshake).
///
/// The pool is behind a lock: these calls are rare next to proxied requests (cache misses, key refreshes), so the
/// lock is not on a hot path.
public final class HTTPClient: Sendable {
    /// How connections are kept.
    public struct Configuration: Sendable {
        /// Idle connections kept per origin. Default 4.
        public var maximumIdlePerOrigin: Int = 4
        /// How long an idle connection may wait for its next request. Default 20 s: below the common server
        /// keep-alive timeouts (Hummingbird's and nginx's 60 s, Node's 5 s being the exception the stale-retry covers).
        public var idleTimeout: TimeAmount = .seconds(20)
        /// Larger responses fail with `responseTooLarge`. Default 1 MiB.
        public var responseSizeLimit: Int = 1 << 20
        /// Which certificates an `https://` server may present. Default: the system trust store.
        public var trust: HTTPClientTrust = .system

        public init(maximumIdlePerOrigin: Int = 4, idleTimeout: TimeAmount = .seconds(20), responseSizeLimit: Int = 1 << 20, trust: HTTPClientTrust = .system) {
            self.maximumIdlePerOrigin = maximumIdlePerOrigin
            self.idleTimeout = idleTimeout
            self.responseSizeLimit = responseSizeLimit
            self.trust = trust
        }
    }

    public let configuration: Configuration
    let group: any EventLoopGroup
    private let pool: NIOLockedValueBox<IdleConnectionPool<any Channel>>
    private let isShutDown = NIOLockedValueBox(false)
    /// Connections opened so far (tests check reuse with it).
    private let connectionsOpened = NIOLockedValueBox(0)

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, configuration: Configuration = .init()) {
        self.group = group
        self.configuration = configuration
        pool = NIOLockedValueBox(
            IdleConnectionPool(maximumIdlePerOrigin: configuration.maximumIdlePerOrigin, idleTimeoutNanoseconds: UInt64(max(0, configuration.idleTimeout.nanoseconds)))
        )
    }

    /// How many connections this client has opened.
    public var openedConnections: Int { connectionsOpened.withLockedValue { $0 } }
    /// How many connections are idle in the pool.
    public var idleConnections: Int { pool.withLockedValue { $0.count } }

    /// Sends `request` and reads the whole response, within `timeout` (connecting included).
    public func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        let deadline = NIODeadline.now() + timeout
        let now = NIODeadline.now().uptimeNanoseconds
        let (pooled, expired) = pool.withLockedValue { $0.take(request.origin, now: now) }
        for channel in expired { channel.close(promise: nil) }
        if let channel = pooled {
            do {
                return try await send(request, on: channel, deadline: deadline)
            } catch let error as NoResponseYet {
                // A pooled connection the server had closed while idle: once more on a fresh one, if that is safe.
                guard request.retryOnStaleConnection else {
                    throw HTTPClientError(.connectionClosed, "the reused connection closed before an answer: \(error.underlying.map { "\($0)" } ?? "EOF")")
                }
            }
        }
        let channel = try await connect(request.origin, deadline: deadline)
        do {
            return try await send(request, on: channel, deadline: deadline)
        } catch let error as NoResponseYet {
            throw HTTPClientError(.connectionClosed, "the connection closed before an answer: \(error.underlying.map { "\($0)" } ?? "EOF")")
        }
    }

    /// Closes the idle connections; later requests still work but their connections are not kept.
    public func shutdown() {
        isShutDown.withLockedValue { $0 = true }
        for channel in pool.withLockedValue({ $0.removeAll() }) { channel.close(promise: nil) }
    }

    private func send(_ request: HTTPClientRequest, on channel: any Channel, deadline: NIODeadline) async throws -> HTTPClientResponse {
        var headers = request.headers
        if !headers.contains(name: "host") { headers.add(name: "Host", value: request.origin.hostHeader) }
        if let body = request.body {
            headers.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        } else if request.method == .POST || request.method == .PUT || request.method == .PATCH {
            headers.replaceOrAdd(name: "Content-Length", value: "0")
        }
        let promise = channel.eventLoop.makePromise(of: CompletedExchange.self)
        let timer = channel.eventLoop.scheduleTask(deadline: deadline) {
            promise.fail(HTTPClientError(.timeout, "no answer from \(request.origin) in time"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        let pending = PendingRequest(
            head: HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path, headers: headers), body: request.body, promise: promise,
            sizeLimit: configuration.responseSizeLimit
        )
        // A pooled connection that closed before the request could be written fails the write, not the read.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in promise.fail(NoResponseYet(underlying: error)) }
        channel.writeAndFlush(pending, promise: written)
        let exchange = try await promise.futureResult.get()
        release(channel, origin: request.origin, reusable: exchange.reusable)
        return exchange.response
    }

    private func release(_ channel: any Channel, origin: HTTPOrigin, reusable: Bool) {
        guard reusable, channel.isActive, !isShutDown.withLockedValue({ $0 }) else {
            channel.close(promise: nil)
            return
        }
        let id = ObjectIdentifier(channel)
        let now = NIODeadline.now().uptimeNanoseconds
        guard pool.withLockedValue({ $0.release(channel, id: id, origin: origin, now: now) }) else {
            channel.close(promise: nil)
            return
        }
        // An idle connection nobody takes is closed when it expires, not kept open until the next request.
        let pool = self.pool
        channel.eventLoop.scheduleTask(in: configuration.idleTimeout) {
            if let expired = pool.withLockedValue({ $0.removeIfIdleSince(now, id: id, origin: origin) }) { expired.close(promise: nil) }
        }
    }

    private func connect(_ origin: HTTPOrigin, deadline: NIODeadline) async throws -> any Channel {
        let sslContext = try origin.isTLS ? TLSContexts.context(for: configuration.trust) : nil
        let isIPAddress = (try? SocketAddress(ipAddress: origin.host, port: 0)) != nil
        let remaining = deadline - .now()
        guard remaining > .zero else { throw HTTPClientError(.timeout, "no time left to connect to \(origin)") }
        let bootstrap = ClientBootstrap(group: group.any())
            .connectTimeout(remaining)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        // SNI and hostname verification use the name; an IP literal is verified against the IP SANs.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: isIPAddress ? nil : origin.host))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPClientConnectionHandler())
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: origin.host, port: origin.port).get()
        } catch {
            throw HTTPClientError(.connectFailed, "cannot connect to \(origin): \(error)")
        }
        connectionsOpened.withLockedValue { $0 += 1 }
        let pool = self.pool
        let id = ObjectIdentifier(channel)
        channel.closeFuture.whenComplete { _ in _ = pool.withLockedValue { $0.remove(id: id, origin: origin) } }
        return channel
    }
}

/// One TLS context per trust setting, made once (loading a trust store is slow).
enum TLSContexts {
    private static let contexts = NIOLockedValueBox<[HTTPClientTrust: NIOSSLContext]>([:])

    static func context(for trust: HTTPClientTrust) throws -> NIOSSLContext {
        try contexts.withLockedValue { contexts in
            if let context = contexts[trust] { return context }
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            if case .caFile(let path) = trust {
                configuration.trustRoots = .file(path)
            }
            do {
                let context = try NIOSSLContext(configuration: configuration)
                contexts[trust] = context
                return context
            } catch {
                throw HTTPClientError(.tls, "cannot load the TLS trust roots: \(error)")
            }
        }
    }
}
