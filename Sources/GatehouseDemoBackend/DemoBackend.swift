import GatehouseObservability
import GatehouseServiceAuth
import GatehouseTokens
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Tracing

/// The echo service `gatehouse demo` runs behind the gateway: every request is answered with JSON describing
/// what arrived (method, path, query, headers, body size), so a user can see what the gateway did to it.
public enum DemoBackend {
    /// Which requests need a gateway-issued JWT.
    public struct Protection: Sendable {
        public var verifier: ServiceTokenVerifier
        /// Paths under these prefixes are served without a token (the gateway's `/public/` route).
        public var publicPathPrefixes: [String]
        /// Scopes every protected request's token must carry. Default none.
        public var requiredScopes: ScopeRequirement
        /// Realm in challenges. Default `demo-backend`.
        public var realm: String

        public init(verifier: ServiceTokenVerifier, publicPathPrefixes: [String] = [], requiredScopes: ScopeRequirement = .init(), realm: String = "demo-backend") {
            self.verifier = verifier
            self.publicPathPrefixes = publicPathPrefixes
            self.requiredScopes = requiredScopes
            self.realm = realm
        }
    }

    /// `protection` nil: every request is echoed (the gateway's own tests use it so); otherwise requests outside
    /// the public prefixes must carry a JWT that verifies against the authorization server's keys.
    public static func application(
        host: String, port: Int, logger: Logger, protection: Protection? = nil, tracer: GatehouseTracer? = nil,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router()
        if let tracer { router.addMiddleware { DemoTracingMiddleware(tracer: tracer) } }
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}")))
        }
        router.addMiddleware {
            EchoMiddleware(protection: protection)
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "gatehouse-demo-backend"),
            onServerRunning: { channel in
                if let protection { try? await protection.verifier.prefetch() }
                await onListening(channel.localAddress?.port ?? port)
            },
            logger: logger
        )
    }
}

/// Answers every request that no route took with the echo document (and, for a verified JWT, its claims).
struct EchoMiddleware<Context: RequestContext>: RouterMiddleware {
    let protection: DemoBackend.Protection?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/healthz" { return try await next(request, context) }
        var claims: AccessTokenClaims?
        if let protection, !protection.publicPathPrefixes.contains(where: { request.uri.path.hasPrefix($0) }) {
            let authorization = request.headers[values: .authorization]
            switch await protection.verifier.verify(authorization: authorization, requiring: protection.requiredScopes) {
            case .success(let verified):
                claims = verified
            case .failure(let rejection):
                var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
                if let challenge = rejection.challenge(realm: protection.realm) { headers[.wwwAuthenticate] = challenge }
                let body = "{\"error\":" + quote(rejection.code.rawValue) + ",\"message\":" + quote(rejection.message) + "}"
                return Response(status: .init(code: rejection.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
            }
        }
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
        json += "},\"body_bytes\":\(bodyBytes)"
        if let claims {
            json += ",\"verified_token\":{\"iss\":" + quote(claims.iss) + ",\"sub\":" + quote(claims.sub) + ",\"client_id\":" + quote(claims.client_id)
            json += ",\"aud\":[" + claims.aud.map(quote).joined(separator: ",") + "],\"scope\":" + (claims.scope.map(quote) ?? "null") + ",\"exp\":\(claims.exp)}"
        }
        json += "}"
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: json)))
    }

    func quote(_ text: String) -> String {
        JSONEscaping.quoted(text)
    }
}

/// A server span per request at the demo backend, continuing the gateway's attempt span (the parent id the
/// backend sees in `traceparent`).
struct DemoTracingMiddleware<Context: RequestContext>: RouterMiddleware {
    let tracer: GatehouseTracer

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let headers = request.headers
        var parent = ServiceContext.topLevel
        tracer.extract({ name in HTTPField.Name(name).flatMap { headers[$0] } }, into: &parent, using: HeaderLookupExtractor())
        let span = tracer.startSpan("\(request.method.rawValue) echo", context: parent, ofKind: .server)
        defer { span.end() }
        span.attributes["http.request.method"] = request.method.rawValue
        span.attributes["url.path"] = request.uri.path
        let response = try await ServiceContext.$current.withValue(span.context) { try await next(request, context) }
        span.attributes["http.response.status_code"] = Int(response.status.code)
        return response
    }
}
