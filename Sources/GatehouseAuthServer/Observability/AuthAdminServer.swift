import GatehouseObservability
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The authorization server's admin listener (`admin: {host, port}`): `/metrics` (Prometheus text format 0.0.4),
/// `/healthz` (the process is up) and `/readyz` (the store answers). Never on the public listener.
public struct AuthAdminServer: Service {
    let host: String
    let port: Int
    let server: AuthorizationServer
    let logger: Logger
    let onListening: @Sendable (Int) -> Void

    public init(host: String, port: Int, server: AuthorizationServer, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.server = server
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let server = self.server
        let channel = try await AdminHTTP.bind(host: host, port: port, group: MultiThreadedEventLoopGroup.singleton) { path, eventLoop in
            Self.respond(to: path, server: server, on: eventLoop)
        }
        let bound = channel.localAddress?.port ?? port
        logger.notice("auth admin listening", metadata: ["port": "\(bound)"])
        onListening(bound)
        try? await gracefulShutdown()
        try? await channel.close()
    }

    static func respond(to path: String, server: AuthorizationServer, on eventLoop: any EventLoop) -> EventLoopFuture<AdminResponse>? {
        switch path {
        case "/healthz":
            return eventLoop.makeSucceededFuture(AdminResponse(.ok, json: "{\"status\":\"ok\"}"))
        case "/readyz":
            let promise = eventLoop.makePromise(of: AdminResponse.self)
            promise.completeWithTask {
                // Ready while the store answers (PostgreSQL: a round trip within the call deadline).
                do {
                    try await server.store.ping()
                    return AdminResponse(.ok, json: "{\"status\":\"ready\"}")
                } catch {
                    return AdminResponse(.serviceUnavailable, json: "{\"status\":\"store_unavailable\"}")
                }
            }
            return promise.futureResult
        case "/metrics":
            var text = PrometheusText()
            server.metrics.render(into: &text)
            return eventLoop.makeSucceededFuture(.metrics(text.text))
        default:
            return nil
        }
    }
}
