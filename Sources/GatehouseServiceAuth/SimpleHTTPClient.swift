import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOConcurrencyHelpers

/// A response read whole.
public struct SimpleHTTPResponse: Sendable {
    public init(status: Int, headers: HTTPHeaders, body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public var status: Int
    public var headers: HTTPHeaders
    public var body: String
}

/// One HTTP/1.1 request (over TLS for https) on its own connection, read whole: for calls to the authorization server (discovery, JWKS,
/// token-exchange misses), which are rare next to proxied requests. Responses over 1 MiB are refused.
public enum SimpleHTTPClient {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String

        public init(description: String) {
            self.description = description
        }
    }

    /// Which certificates an `https://` server may present.
    public enum Trust: Sendable, Hashable {
        /// The system's trust store.
        case system
        /// Only certificates issued by the CA(s) in this PEM file (a private CA).
        case caFile(String)
    }

    /// One TLS context per trust setting, made once (loading a trust store is slow).
    private static let contexts = NIOLockedValueBox<[Trust: NIOSSLContext]>([:])

    static func context(for trust: Trust) throws -> NIOSSLContext {
        try contexts.withLockedValue { contexts in
            if let context = contexts[trust] { return context }
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            if case .caFile(let path) = trust {
                configuration.trustRoots = .file(path)
            }
            let context = try NIOSSLContext(configuration: configuration)
            contexts[trust] = context
            return context
        }
    }

    /// `tls` nil: plain HTTP. Otherwise TLS 1.2+ with full certificate verification against `host`.
    public static func send(
        host: String, port: Int, method: HTTPMethod, path: String, headers: HTTPHeaders, body: String?, timeout: TimeAmount, group: any EventLoopGroup,
        tls: Trust? = nil
    ) async throws -> SimpleHTTPResponse {
        let sslContext = try tls.map { try context(for: $0) }
        let isIPAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: SimpleHTTPResponse.self)
        let timer = eventLoop.scheduleTask(in: timeout) { promise.fail(Failure(description: "no answer within \(timeout.nanoseconds / 1_000_000) ms")) }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        // SNI and hostname verification use the name; an IP literal is verified against the IP SANs.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: isIPAddress ? nil : host))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        bootstrap.connect(host: host, port: port).whenComplete { result in
            switch result {
            case .failure(let error):
                promise.fail(Failure(description: "cannot connect to \(host):\(port): \(error)"))
            case .success(let channel):
                var headers = headers
                headers.replaceOrAdd(name: "Host", value: "\(host):\(port)")
                headers.replaceOrAdd(name: "Connection", value: "close")
                if let body { headers.replaceOrAdd(name: "Content-Length", value: String(body.utf8.count)) }
                channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)), promise: nil)
                if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil) }
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    final class ResponseCollector: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<SimpleHTTPResponse>
        var head: HTTPResponseHead?
        /// The body's bytes, decoded once at the end: a UTF-8 sequence may be split across reads, and decoding each
        /// read on its own turned both halves into replacement characters.
        var body: ByteBuffer?

        init(promise: EventLoopPromise<SimpleHTTPResponse>) {
            self.promise = promise
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
            case .body(var buffer):
                guard (body?.readableBytes ?? 0) + buffer.readableBytes <= 1 << 20 else {
                    promise.fail(Failure(description: "response over 1 MiB"))
                    context.close(promise: nil)
                    return
                }
                if body == nil { body = buffer } else { body!.writeBuffer(&buffer) }
            case .end:
                if let head {
                    promise.succeed(SimpleHTTPResponse(status: Int(head.status.code), headers: head.headers, body: body.map { String(buffer: $0) } ?? ""))
                }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Failure(description: "connection closed before a complete response"))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension SimpleHTTPClient.ResponseCollector: Sendable {}

extension SimpleHTTPClient {
    /// A request to an absolute `http://` or `https://` URL; `trust` says which certificates an https server may
    /// present (default: the system's trust store).
    public static func send(
        url: String, method: HTTPMethod, headers: HTTPHeaders = [:], body: String? = nil, timeout: TimeAmount, group: any EventLoopGroup, trust: Trust = .system
    ) async throws -> SimpleHTTPResponse {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = components.host, !host.isEmpty
        else {
            throw Failure(description: "only absolute http:// and https:// URLs are supported: \(url)")
        }
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        var path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        if let query = components.percentEncodedQuery { path += "?" + query }
        let secure = scheme == "https"
        return try await send(
            host: bareHost, port: components.port ?? (secure ? 443 : 80), method: method, path: path, headers: headers, body: body, timeout: timeout, group: group,
            tls: secure ? trust : nil
        )
    }

    public static func get(url: String, timeout: TimeAmount, group: any EventLoopGroup, trust: Trust = .system) async throws -> SimpleHTTPResponse {
        try await send(url: url, method: .GET, timeout: timeout, group: group, trust: trust)
    }

    /// `max-age` of a `Cache-Control` value, in seconds.
    public static func maxAge(_ cacheControl: String?) -> Double? {
        guard let cacheControl else { return nil }
        for directive in cacheControl.split(separator: ",") {
            let parts = directive.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "max-age", let value = Double(parts[1]) { return value }
        }
        return nil
    }
}
