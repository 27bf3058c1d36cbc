import Hummingbird
import Logging
import NIOCore

/// The admin listener: `/healthz` (the process is up) and `/readyz` (listeners bound, routes and pools ready).
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
        return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "gatehouse-admin"), logger: logger)
    }
}
