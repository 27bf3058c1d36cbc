import Hummingbird
import Logging
import NIOCore

/// The admin listener: `/healthz` (the process is up), `/readyz` (listeners bound, the authorization server
/// discovered when tokens are checked) and `/token-cache` (the token cache's counters).
public enum AdminServer {
    public static func application(host: String, port: Int, gateway: GatewayServer, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}")))
        }
        router.get("/readyz") { _, _ in
            let ready = gateway.isReady
            return Response(
                status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: ready ? "{\"status\":\"ready\"}" : "{\"status\":\"starting\"}"))
            )
        }
        router.get("/token-cache") { _, _ in
            guard let validator = gateway.runtime.snapshot.tokenValidator else {
                return Response(status: .notFound, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"error\":\"not_found\",\"message\":\"no authorization_server is configured\"}")))
            }
            let statistics = validator.statistics
            let cache = statistics.cache
            let json =
                "{\"entries\":\(statistics.entries),\"hits\":\(cache.hits),\"negative_hits\":\(cache.negativeHits),\"misses\":\(cache.misses),"
                + "\"coalesced\":\(cache.coalesced),\"evictions\":\(cache.evictions),\"expirations\":\(cache.expirations),"
                + "\"exchanges\":\(statistics.exchanges),\"verifications\":\(statistics.verifications),\"shed\":\(statistics.shed),\"discovered\":\(validator.isReady)}"
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "gatehouse-admin"), logger: logger)
    }
}
