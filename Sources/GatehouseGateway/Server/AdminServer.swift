import GatehouseObservability
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The admin listener, on NIO's HTTP/1.1 server pipeline (no web framework in the data-path module):
/// `/healthz` (the process is up), `/readyz` (listeners bound, the authorization server discovered when tokens are
/// checked), `/token-cache` (the token cache's counters) and `/exchanges` (finished exchanges summed over the
/// event loops' own counters — the aggregation `/metrics` will use).
public struct AdminServer: Service {
    let host: String
    let port: Int
    let gateway: GatewayServer
    let logger: Logger
    let group: any EventLoopGroup

    public init(host: String, port: Int, gateway: GatewayServer, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.gateway = gateway
        self.logger = logger
        self.group = group
    }

    public func run() async throws {
        let gateway = self.gateway
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(gateway: gateway))
                }
            }
            .bind(host: host, port: port).get()
        logger.notice("admin listening", metadata: ["port": "\(channel.localAddress?.port ?? port)"])
        try? await gracefulShutdown()
        try? await channel.close()
    }

    /// A response for a path (`GET` only); nil when unknown.
    static func respond(to path: String, gateway: GatewayServer, on eventLoop: any EventLoop) -> EventLoopFuture<(HTTPResponseStatus, String)>? {
        switch path {
        case "/healthz":
            return eventLoop.makeSucceededFuture((.ok, "{\"status\":\"ok\"}"))
        case "/readyz":
            let ready = gateway.isReady
            return eventLoop.makeSucceededFuture((ready ? .ok : .serviceUnavailable, ready ? "{\"status\":\"ready\"}" : "{\"status\":\"starting\"}"))
        case "/token-cache":
            guard let validator = gateway.runtime.snapshot.tokenValidator else {
                return eventLoop.makeSucceededFuture((.notFound, "{\"error\":\"not_found\",\"message\":\"no authorization_server is configured\"}"))
            }
            let statistics = validator.statistics
            let cache = statistics.cache
            let json =
                "{\"entries\":\(statistics.entries),\"hits\":\(cache.hits),\"negative_hits\":\(cache.negativeHits),\"misses\":\(cache.misses),"
                + "\"coalesced\":\(cache.coalesced),\"evictions\":\(cache.evictions),\"expirations\":\(cache.expirations),"
                + "\"exchanges\":\(statistics.exchanges),\"verifications\":\(statistics.verifications),\"shed\":\(statistics.shed),\"discovered\":\(validator.isReady)}"
            return eventLoop.makeSucceededFuture((.ok, json))
        case "/tracing":
            // The span exporter's counts (dropped: queue full or batch failed), for the metrics to pick up.
            let exporter = gateway.runtime.snapshot.tracing.sink as? SpanExporter
            let statistics = exporter?.statistics ?? TracingStatistics()
            let json =
                "{\"exporting\":\(exporter != nil),\"recorded\":\(statistics.recorded),\"exported\":\(statistics.exported),"
                + "\"dropped\":\(statistics.dropped),\"failed_exports\":\(statistics.failedExports),\"queued\":\(statistics.queued)}"
            return eventLoop.makeSucceededFuture((.ok, json))
        case "/exchanges":
            return gateway.exchangeCounters(on: eventLoop).map { counters in
                let classes = (1...5).map { "\"\($0)xx\":\(counters.byStatusClass[$0])" }.joined(separator: ",")
                return (
                    .ok,
                    "{\"total\":\(counters.total),\"completed\":\(counters.completed),\"refused\":\(counters.refused),\"rejected\":\(counters.rejected),"
                        + "\"upstream_failures\":\(counters.upstreamFailures),\"client_gone\":\(counters.clientGone),\"tunnelled\":\(counters.tunnelled),"
                        + "\"by_status\":{\(classes)}}"
                )
            }
        case "/rate-limits":
            return eventLoop.makeSucceededFuture((.ok, rateLimitsJSON(gateway.runtime.snapshot)))
        case "/breakers":
            return eventLoop.makeSucceededFuture((.ok, breakersJSON(gateway.runtime.snapshot, now: .now())))
        case "/admission":
            return eventLoop.makeSucceededFuture((.ok, admissionJSON(gateway.runtime.snapshot)))
        default:
            return nil
        }
    }
}

/// One admin connection: answers each request once its end arrives.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let gateway: GatewayServer
    private var head: HTTPRequestHead?

    init(gateway: GatewayServer) {
        self.gateway = gateway
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let value):
            head = value
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let answer: EventLoopFuture<(HTTPResponseStatus, String)>
            if head.method != .GET && head.method != .HEAD {
                answer = context.eventLoop.makeSucceededFuture((.methodNotAllowed, "{\"error\":\"method_not_allowed\"}"))
            } else {
                answer =
                    AdminServer.respond(to: path, gateway: gateway, on: context.eventLoop)
                    ?? context.eventLoop.makeSucceededFuture((.notFound, "{\"error\":\"not_found\"}"))
            }
            let keepAlive = head.isKeepAlive
            let isHEAD = head.method == .HEAD
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            answer.whenSuccess { status, body in
                let (handler, context) = bound.value
                handler.write(status: status, body: body, keepAlive: keepAlive, isHEAD: isHEAD, context: context)
            }
        }
    }

    private func write(status: HTTPResponseStatus, body: String, keepAlive: Bool, isHEAD: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !isHEAD { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil) }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
