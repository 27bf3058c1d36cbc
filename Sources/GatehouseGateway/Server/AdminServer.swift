import GatehouseObservability
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The admin listener (`AdminHTTP`, plain NIO HTTP/1.1): `/healthz` (the process is up), `/readyz` (listeners
/// bound, the authorization server discovered when tokens are checked), `/metrics` (Prometheus text format 0.0.4),
/// `/token-cache` (the token cache's counters) and `/exchanges` (finished exchanges summed over the event loops' own
/// counters).
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
        let channel = try await AdminHTTP.bind(host: host, port: port, group: group) { path, eventLoop in
            AdminServer.respond(to: path, gateway: gateway, on: eventLoop)
        }
        logger.notice("admin listening", metadata: ["port": "\(channel.localAddress?.port ?? port)"])
        try? await gracefulShutdown()
        try? await channel.close()
    }

    /// A response for a path (`GET` only); nil when unknown.
    static func respond(to path: String, gateway: GatewayServer, on eventLoop: any EventLoop) -> EventLoopFuture<AdminResponse>? {
        switch path {
        case "/healthz":
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: "{\"status\":\"ok\"}"))
        case "/readyz":
            let ready = gateway.isReady
            return eventLoop.makeSucceededFuture(AdminResponse(ready ? .ok : .serviceUnavailable, json: ready ? "{\"status\":\"ready\"}" : "{\"status\":\"starting\"}"))
        case "/metrics":
            return gateway.metricsText(on: eventLoop).map { AdminResponse.metrics($0) }
        case "/token-cache":
            guard let validator = gateway.runtime.snapshot.tokenValidator else {
                return eventLoop.makeSucceededFuture(AdminResponse(.notFound, json: "{\"error\":\"not_found\",\"message\":\"no authorization_server is configured\"}"))
            }
            let statistics = validator.statistics
            let cache = statistics.cache
            let json =
                "{\"entries\":\(statistics.entries),\"hits\":\(cache.hits),\"negative_hits\":\(cache.negativeHits),\"misses\":\(cache.misses),"
                + "\"coalesced\":\(cache.coalesced),\"evictions\":\(cache.evictions),\"expirations\":\(cache.expirations),"
                + "\"exchanges\":\(statistics.exchanges),\"verifications\":\(statistics.verifications),\"shed\":\(statistics.shed),\"discovered\":\(validator.isReady)}"
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: json))
        case "/tracing":
            // The span exporter's counts (dropped: queue full or batch failed), for the metrics to pick up.
            let exporter = gateway.runtime.snapshot.tracing.sink as? SpanExporter
            let statistics = exporter?.statistics ?? TracingStatistics()
            let json =
                "{\"exporting\":\(exporter != nil),\"recorded\":\(statistics.recorded),\"exported\":\(statistics.exported),"
                + "\"dropped\":\(statistics.dropped),\"failed_exports\":\(statistics.failedExports),\"queued\":\(statistics.queued)}"
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: json))
        case "/exchanges":
            return gateway.exchangeCounters(on: eventLoop).map { counters in
                let classes = (1...5).map { "\"\($0)xx\":\(counters.byStatusClass[$0])" }.joined(separator: ",")
                return AdminResponse(
                    .ok,
                    json: "{\"total\":\(counters.total),\"completed\":\(counters.completed),\"refused\":\(counters.refused),\"rejected\":\(counters.rejected),"
                        + "\"upstream_failures\":\(counters.upstreamFailures),\"client_gone\":\(counters.clientGone),\"tunnelled\":\(counters.tunnelled),"
                        + "\"by_status\":{\(classes)}}"
                )
            }
        case "/rate-limits":
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: rateLimitsJSON(gateway.runtime.snapshot)))
        case "/breakers":
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: breakersJSON(gateway.runtime.snapshot, now: .now())))
        case "/admission":
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: admissionJSON(gateway.runtime.snapshot)))
        default:
            return nil
        }
    }
}
