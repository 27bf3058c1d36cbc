import GatehouseObservability
import Hummingbird
import Logging
import NIOCore

/// The echo service `gatehouse demo` runs behind the gateway: every request is answered with JSON describing
/// what arrived (method, path, query, headers, body size), so a user can see what the gateway did to it.
public enum DemoBackend {
    public static func application(host: String, port: Int, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router()
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}")))
        }
        router.addMiddleware {
            EchoMiddleware()
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "gatehouse-demo-backend"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger
        )
    }
}

/// Answers every request that no route took with the echo document.
struct EchoMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/healthz" { return try await next(request, context) }
        var bodyBytes = 0
        for try await chunk in request.body { bodyBytes += chunk.readableBytes }
        var json = "{\"method\":" + quote(request.method.rawValue) + ",\"path\":" + quote(request.uri.path)
        json += ",\"query\":" + (request.uri.query.map(quote) ?? "null")
        json += ",\"headers\":{"
        var first = true
        for field in request.headers {
            if !first { json += "," }
            first = false
            json += quote(field.name.canonicalName) + ":" + quote(field.value)
        }
        json += "},\"body_bytes\":\(bodyBytes)}"
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: json)))
    }

    func quote(_ text: String) -> String {
        JSONEscaping.quoted(text)
    }
}
