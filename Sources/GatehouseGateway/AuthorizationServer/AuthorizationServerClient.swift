import Foundation
import GatehouseConfiguration
import GatehouseHTTPClient
import GatehouseObservability
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Tracing

/// The gateway's view of the authorization server: its RFC 8414 metadata, its keys, and the token exchange that
/// turns an opaque token into the JWT the backend receives. Authenticates with the gateway's own client credentials.
public final class AuthorizationServerClient: Sendable {
    /// What discovery found.
    public struct Metadata: Sendable, Equatable {
        public var issuer: String
        public var tokenEndpoint: String
        public var jwksURI: String
        public var introspectionEndpoint: String?
    }

    /// What an exchange told us.
    public enum ExchangeOutcome: Sendable, Equatable {
        /// The JWT standing for the token, and when it expires (Unix seconds).
        case jwt(String, expiresAt: Double)
        /// The token is not active (unknown, expired, revoked): 401 for the client.
        case inactive
        /// The authorization server could not be asked: fail closed (503 with Retry-After).
        case unavailable(String)
    }

    public let issuer: String
    let clientID: String
    let clientSecret: String
    let timeout: TimeAmount
    /// Keep-alive connections to the authorization server: a token-cache miss reuses one instead of connecting anew.
    let http: HTTPClient
    /// Client spans of the calls a request causes (exchange, introspection), children of its server span.
    let tracer: GatehouseTracer?
    private let discovered = NIOLockedValueBox<Metadata?>(nil)

    public init(
        issuer: String, clientID: String, clientSecret: String, timeout: TimeAmount = .seconds(2), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        trust: HTTPClientTrust = .system, tracer: GatehouseTracer? = nil
    ) {
        self.tracer = tracer
        http = HTTPClient(group: group, configuration: .init(trust: trust))
        self.issuer = issuer
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.timeout = timeout
    }

    /// The metadata once discovery has succeeded (readiness depends on it).
    public var metadata: Metadata? { discovered.withLockedValue { $0 } }

    /// Reads the metadata, retrying with exponential backoff (doubling from `initial` up to `maximum`, with jitter)
    /// until it succeeds or the task is cancelled.
    public func discover(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(10), logger: Logger) async throws -> Metadata {
        var delay = initial
        while true {
            do {
                let metadata = try await fetchMetadata()
                discovered.withLockedValue { $0 = metadata }
                logger.notice("authorization server discovered", metadata: ["issuer": "\(metadata.issuer)"])
                return metadata
            } catch {
                logger.warning("authorization server not reachable yet; retrying", metadata: ["issuer": "\(issuer)", "error": "\(error)", "retry_in_ms": "\(delay.components.seconds * 1000 + delay.components.attoseconds / 1_000_000_000_000_000)"])
                try await Task.sleep(for: delay + .milliseconds(Int.random(in: 0...50)))
                delay = min(delay * 2, maximum)
            }
        }
    }

    func fetchMetadata() async throws -> Metadata {
        // RFC 8414 §3.1: for an issuer with a path the well-known segment goes before the path, not after it.
        let response = try await get(GatewayConfiguration.AuthorizationServer.metadataURL(issuer: issuer))
        guard response.status == 200, let object = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any],
            let issuer = object["issuer"] as? String, let token = object["token_endpoint"] as? String, let jwks = object["jwks_uri"] as? String
        else {
            throw AuthorizationServerClient.Failure("metadata answered \(response.status) without issuer, token_endpoint and jwks_uri")
        }
        // RFC 8414 §3.3: the issuer in the metadata must be the one configured (no mix-up).
        guard issuer == self.issuer else { throw AuthorizationServerClient.Failure("metadata names issuer \(issuer), expected \(self.issuer)") }
        return Metadata(issuer: issuer, tokenEndpoint: token, jwksURI: jwks, introspectionEndpoint: object["introspection_endpoint"] as? String)
    }

    /// The JWKS document and its max-age.
    public func fetchJWKS() async throws -> (json: String, maxAge: Double?) {
        guard let metadata else { throw AuthorizationServerClient.Failure("not discovered yet") }
        let response = try await get(metadata.jwksURI)
        guard response.status == 200 else { throw AuthorizationServerClient.Failure("JWKS answered \(response.status)") }
        return (response.text, HTTPClientResponse.maxAge(response.headers.first(name: "cache-control")))
    }

    /// RFC 8693 exchange of an opaque access token for its JWT.
    /// `trace`: the request whose token this is (the call becomes a client span of its trace, and sends `traceparent`).
    public func exchange(_ token: String, trace: RequestTrace? = nil) async -> ExchangeOutcome {
        guard let metadata else { return .unavailable("the authorization server has not been discovered") }
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), ("requested_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ].map { "\($0.0)=\(Self.formEncode($0.1))" }.joined(separator: "&")
        let response: HTTPClientResponse
        do {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            headers.add(name: "Authorization", value: basicAuthorization)
            response = try await send(.POST, metadata.tokenEndpoint, headers: headers, body: form, trace: trace, operation: "token_exchange")
        } catch {
            return .unavailable("\(error)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any] else {
            return .unavailable("the token endpoint answered \(response.status) without JSON")
        }
        if response.status == 200, let jwt = object["access_token"] as? String, let expiresIn = object["expires_in"] as? Int {
            return .jwt(jwt, expiresAt: Date().timeIntervalSince1970 + Double(expiresIn))
        }
        // RFC 8693 §2.2.2: an unacceptable subject token is invalid_request (this server) or invalid_grant (others).
        if response.status == 400, let error = object["error"] as? String, error == "invalid_request" || error == "invalid_grant" {
            return .inactive
        }
        return .unavailable("the token endpoint answered \(response.status) \(object["error"] as? String ?? "")")
    }

    /// What an RFC 9701 introspection returned.
    public enum IntrospectionOutcome: Sendable, Equatable {
        /// The signed response (`typ: token-introspection+jwt`), active or not: the caller verifies it.
        case response(String)
        /// The authorization server could not be asked, or did not answer with a signed response.
        case unavailable(String)
    }

    /// RFC 7662 introspection of an access token, answered as an RFC 9701 signed JWT.
    public func introspectAsJWT(_ token: String, trace: RequestTrace? = nil) async -> IntrospectionOutcome {
        guard let metadata else { return .unavailable("the authorization server has not been discovered") }
        guard let endpoint = metadata.introspectionEndpoint else { return .unavailable("the authorization server publishes no introspection_endpoint") }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        headers.add(name: "Accept", value: "application/token-introspection+jwt")
        headers.add(name: "Authorization", value: basicAuthorization)
        let response: HTTPClientResponse
        do {
            response = try await send(
                .POST, endpoint, headers: headers, body: "token=\(Self.formEncode(token))&token_type_hint=access_token", trace: trace, operation: "introspection"
            )
        } catch {
            return .unavailable("\(error)")
        }
        guard response.status == 200, response.headers.first(name: "content-type")?.lowercased().contains("application/token-introspection+jwt") == true else {
            return .unavailable("the introspection endpoint answered \(response.status) without a signed response")
        }
        return .response(response.text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// HTTP Basic with the form-encoded credentials (RFC 6749 §2.3.1).
    private var basicAuthorization: String {
        "Basic " + Data("\(Self.formEncode(clientID)):\(Self.formEncode(clientSecret))".utf8).base64EncodedString()
    }

    private func get(_ url: String) async throws -> HTTPClientResponse {
        try await send(.GET, url, headers: [:], body: nil)
    }

    /// `retryOnStale`: the token exchange and introspection are POSTs, but repeating them has no effect beyond the
    /// answer, so a pooled connection the server closed while idle is retried once on a fresh one.
    private func send(
        _ method: HTTPMethod, _ url: String, headers: HTTPHeaders, body: String?, trace: RequestTrace? = nil, operation: String = ""
    ) async throws -> HTTPClientResponse {
        var request = try HTTPClientRequest(url: url, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        request.retryOnStaleConnection = true
        guard let trace, let tracer else { return try await http.execute(request, timeout: timeout) }
        // A client span, child of the request's server span; the authorization server continues it.
        var parent = ServiceContext.topLevel
        parent.spanContext = SpanContext(traceID: trace.traceID, spanID: trace.spanID, sampled: trace.sampled, traceState: trace.traceState)
        let span = tracer.startSpan("\(method.rawValue) \(operation)", context: parent, ofKind: .client)
        defer { span.end() }
        request.headers.replaceOrAdd(
            name: "traceparent", value: W3CTraceContext.format(traceID: span.spanContext.traceID, spanID: span.spanContext.spanID, sampled: span.spanContext.sampled)
        )
        if let state = trace.traceState { request.headers.replaceOrAdd(name: "tracestate", value: state) }
        span.attributes["http.request.method"] = method.rawValue
        span.attributes["server.address"] = request.origin.host
        span.attributes["server.port"] = request.origin.port
        span.attributes["url.path"] = String(request.path.prefix { $0 != "?" })
        span.attributes["gatehouse.operation"] = operation
        do {
            let response = try await http.execute(request, timeout: timeout)
            span.attributes["http.response.status_code"] = response.status
            if response.status >= 500 { span.setStatus(.init(code: .error, message: "answered \(response.status)")) }
            return response
        } catch {
            span.attributes["error.type"] = (error as? HTTPClientError)?.code.rawValue ?? "error"
            span.setStatus(.init(code: .error, message: (error as? HTTPClientError)?.code.rawValue ?? "error"))
            throw error
        }
    }

    /// Why a call to the authorization server failed.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String

        init(_ description: String) {
            self.description = description
        }
    }

    static func formEncode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}
