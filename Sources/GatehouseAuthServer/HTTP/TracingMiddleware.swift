import GatehouseObservability
import HTTPTypes
import Hummingbird
import Tracing

/// A server span per request at the authorization server, continuing the caller's trace (the gateway's client
/// span of a token exchange or introspection). Attributes: method, path (never the query: it can carry codes),
/// status, the endpoint; the token endpoint adds the grant type and the outcome (`issued` or the RFC 6749 error
/// code). Never a token, code, secret or credential.
struct AuthTracingMiddleware: RouterMiddleware {
    typealias Context = AuthRequestContext
    let tracer: GatehouseTracer

    /// The endpoints by path: a bounded set of span names.
    static let endpoints: Set<String> = [
        "/token", "/introspect", "/revoke", "/authorize", "/login", "/consent", "/logout", "/healthz", "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
    ]

    func handle(_ request: Request, context: AuthRequestContext, next: (Request, AuthRequestContext) async throws -> Response) async throws -> Response {
        let headers = request.headers
        var parent = ServiceContext.topLevel
        tracer.extract({ name in HTTPField.Name(name).flatMap { headers[$0] } }, into: &parent, using: HeaderLookupExtractor())
        let path = request.uri.path
        let endpoint = Self.endpoints.contains(path) ? path : "unknown"
        let span = tracer.startSpan("\(request.method.rawValue) \(endpoint)", context: parent, ofKind: .server)
        defer { span.end() }
        span.attributes["http.request.method"] = request.method.rawValue
        span.attributes["url.path"] = path
        span.attributes["http.route"] = endpoint  // `gatehouse.request_id`: set by `RequestIDMiddleware`, inside this one
        let response = try await ActiveSpan.$current.withValue(span) {
            try await ServiceContext.$current.withValue(span.context) { try await next(request, context) }
        }
        span.attributes["http.response.status_code"] = Int(response.status.code)
        if response.status.code >= 500 { span.setStatus(.init(code: .error)) }
        return response
    }
}

extension TokenService {
    /// Notes the grant type of a token request on the active span (bounded: the known grant types, else `other`).
    static func noteGrantType(_ grantType: String?) {
        guard let span = ActiveSpan.current else { return }
        let known = [
            "authorization_code", "client_credentials", "refresh_token", "password", "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:device_code",
        ]
        span.attributes["oauth.grant_type"] = grantType.map { known.contains($0) ? $0 : "other" } ?? "none"
    }

    /// Notes a token request's outcome on the active span: `issued`, or the RFC 6749 error code.
    static func noteOutcome(_ error: (any Error)?) {
        guard let span = ActiveSpan.current else { return }
        span.attributes["gatehouse.outcome"] = error.map { ($0 as? OAuthError)?.code.rawValue ?? "server_error" } ?? "issued"
    }
}
