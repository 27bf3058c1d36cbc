import Foundation
import GatehouseHTTPClient
import GatehouseTokens
import NIOCore
import NIOHTTP1
import NIOPosix

/// What a Swift backend behind the gateway uses to trust the JWT it receives without a network call per request:
/// the key set is loaded from the authorization server's `jwks_uri`, kept per its `Cache-Control` (bounded by
/// `refresh`), and fetched again for an unknown `kid` at most once per `refresh.unknownKidInterval` (a burst of
/// tokens with a new `kid` makes one request). Each request's token is checked for signature (an asymmetric
/// algorithm from the allow-list; never `none`), type `at+jwt`, issuer, audience, expiry and scopes. A signed
/// RFC 9701 introspection response (`typ: token-introspection+jwt`, what a gateway with `exchange:
/// introspection_jwt` forwards) is accepted too: its introspected token gets the same checks.
public final class ServiceTokenVerifier: Sendable {
    public struct Configuration: Sendable {
        /// Required: where the key set is published (the authorization server's `jwks_uri`); `https://` or `http://`.
        public var jwksURL: String
        /// Required: the accepted `iss` (the authorization server's issuer).
        public var issuer: String
        /// The token's `aud` must contain one of these. Required, non-empty: a backend always knows its audience.
        public var audiences: Set<String>
        /// Key-set caching. Default: 60 s...24 h, an unknown `kid` refetches at most every 30 s.
        public var refresh: JWKSRefreshPolicy = .init()
        /// Tolerance for `exp`, `nbf` and `iat`, in seconds. Default 30.
        public var clockSkew: Int = 30
        /// Algorithms accepted. Default: every asymmetric algorithm Gatehouse signs with.
        public var allowedAlgorithms: Set<SigningAlgorithm> = Set(SigningAlgorithm.allCases)
        /// Timeout of one key-set fetch. Default 2 s.
        public var fetchTimeout: TimeAmount = .seconds(2)
        /// Which certificates an https `jwksURL` may present. Default: the system trust store.
        public var trust: SimpleHTTPClient.Trust = .system

        public init(jwksURL: String, issuer: String, audiences: Set<String>, refresh: JWKSRefreshPolicy = .init(), clockSkew: Int = 30) {
            self.jwksURL = jwksURL
            self.issuer = issuer
            self.audiences = audiences
            self.refresh = refresh
            self.clockSkew = clockSkew
        }
    }

    /// Why a request was refused; `challenge` is what to answer with (RFC 6750 §3).
    public struct Rejection: Error, Sendable, Equatable {
        public enum Code: String, Sendable {
            /// No bearer token: 401 with a bare challenge.
            case missingToken = "missing_token"
            /// Several Authorization headers or a malformed value: 400.
            case invalidRequest = "invalid_request"
            /// Bad signature, wrong issuer/audience/type, expired: 401.
            case invalidToken = "invalid_token"
            /// Valid, but without the scopes needed: 403.
            case insufficientScope = "insufficient_scope"
            /// The key set cannot be obtained: 503, the token may be fine.
            case keysUnavailable = "keys_unavailable"
        }

        public let code: Code
        public let message: String
        /// The scope value for an insufficient_scope challenge.
        public let scope: String?

        public init(_ code: Code, _ message: String, scope: String? = nil) {
            self.code = code
            self.message = message
            self.scope = scope
        }

        /// HTTP status to answer with.
        public var status: Int {
            switch code {
            case .missingToken, .invalidToken: 401
            case .invalidRequest: 400
            case .insufficientScope: 403
            case .keysUnavailable: 503
            }
        }

        /// `WWW-Authenticate` value for `realm` (nil for 503).
        public func challenge(realm: String) -> String? {
            switch code {
            case .missingToken: BearerChallenge(realm: realm).headerValue
            case .invalidRequest: BearerChallenge(realm: realm, error: .invalidRequest, description: message).headerValue
            case .invalidToken: BearerChallenge(realm: realm, error: .invalidToken, description: message).headerValue
            case .insufficientScope: BearerChallenge(realm: realm, error: .insufficientScope, description: message, scope: scope).headerValue
            case .keysUnavailable: nil
            }
        }
    }

    public let configuration: Configuration
    private let verifier: RemoteJWKSVerifier

    /// `fetcher` replaces the HTTP fetch of `jwksURL` (tests); `clock` gives Unix seconds.
    public init(
        configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        clock: @escaping RemoteJWKSVerifier.Clock = { Date().timeIntervalSince1970 }, fetcher: RemoteJWKSVerifier.Fetcher? = nil
    ) {
        self.configuration = configuration
        let url = configuration.jwksURL
        let timeout = configuration.fetchTimeout
        let trust = configuration.trust
        verifier = RemoteJWKSVerifier(
            verification: JWTVerificationPolicy(
                issuers: [configuration.issuer], audiences: configuration.audiences, allowedAlgorithms: configuration.allowedAlgorithms,
                clockSkew: configuration.clockSkew
            ),
            policy: configuration.refresh, clock: clock,
            fetcher: fetcher ?? { try await Self.fetchKeySet(url: url, timeout: timeout, group: group, trust: trust) }
        )
    }

    /// Verifies the bearer token in a request's `Authorization` header values and the scopes the request needs.
    public func verify(authorization: [String], requiring scopes: ScopeRequirement = .init()) async -> Result<AccessTokenClaims, Rejection> {
        let token: String
        switch BearerToken.extract(authorizationValues: authorization) {
        case .success(let value): token = value
        case .failure(.missing): return .failure(Rejection(.missingToken, "a bearer token is required"))
        case .failure(.malformed(let why)): return .failure(Rejection(.invalidRequest, why))
        }
        let claims: AccessTokenClaims
        do {
            // A gateway configured with `exchange: introspection_jwt` forwards the RFC 9701 response it verified.
            if (try? JWSHeader(token: token))?.typ?.lowercased().hasSuffix(IntrospectionResponse.type) == true {
                claims = try await verifier.verifyIntrospectionResponse(token, requester: nil)
            } else {
                claims = try await verifier.verify(token)
            }
        } catch let error as JOSEError {
            if error.code == .keySetUnavailable { return .failure(Rejection(.keysUnavailable, error.message)) }
            return .failure(Rejection(.invalidToken, error.message))
        } catch {
            return .failure(Rejection(.invalidToken, "\(error)"))
        }
        if let missing = scopes.missing(from: claims.scopes) {
            return .failure(Rejection(.insufficientScope, "the token lacks a required scope", scope: missing))
        }
        return .success(claims)
    }

    /// Loads the key set now, so the first request does not wait for it.
    public func prefetch() async throws {
        try await verifier.prefetch()
    }

    /// Key-set fetches so far (metrics, tests).
    public var fetches: Int {
        get async { await verifier.fetches }
    }

    /// GET of a key set: its body and `Cache-Control: max-age`.
    public static func fetchKeySet(url: String, timeout: TimeAmount, group: any EventLoopGroup, trust: SimpleHTTPClient.Trust = .system) async throws -> (json: String, maxAge: Double?) {
        let request: HTTPClientRequest
        do {
            request = try HTTPClientRequest(url: url)
        } catch {
            throw SimpleHTTPClient.Failure(description: "\(error)")
        }
        let response: HTTPClientResponse
        do {
            // The shared keep-alive client of this group and trust: a refresh reuses the previous fetch's connection.
            response = try await SimpleHTTPClient.client(group: group, trust: trust).execute(request, timeout: timeout)
        } catch {
            throw SimpleHTTPClient.Failure(description: "\(error)")
        }
        guard response.status == 200 else { throw SimpleHTTPClient.Failure(description: "the key set at \(url) answered \(response.status)") }
        return (response.text, HTTPClientResponse.maxAge(response.headers.first(name: "cache-control")))
    }
}
