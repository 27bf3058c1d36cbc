import Foundation
import Yams

// The authorization server the gateway validates tokens with (`authorization_server:`).
extension GatewayConfiguration {
    /// The authorization server the gateway validates tokens with (`authorization_server:`): its metadata (RFC 8414)
    /// names the JWKS and the token and introspection endpoints; the gateway calls them as a confidential client.
    public struct AuthorizationServer: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
        /// How an opaque access token becomes a JWT the gateway can verify and forward.
        public enum Exchange: String, Sendable, Equatable, CaseIterable {
            /// RFC 8693 token exchange at the token endpoint.
            case tokenExchange = "token_exchange"
            /// RFC 7662 introspection answered as a signed JWT (RFC 9701).
            case introspectionJWT = "introspection_jwt"
        }

        /// The cache of exchange results, keyed by a hash of the token.
        public struct Cache: Sendable, Equatable {
            /// Longest an active result is reused (a revocation takes effect within this). Default 30 s; 1 s...1 h.
            public var maxTTLMilliseconds: Int = 30_000
            /// How long an inactive result is remembered. Default 5 s; 0 (not remembered)...5 min.
            public var negativeTTLMilliseconds: Int = 5000
            /// Entries kept at most. Default 100,000; 1...10,000,000.
            public var capacity: Int = 100_000

            public init(maxTTLMilliseconds: Int = 30_000, negativeTTLMilliseconds: Int = 5000, capacity: Int = 100_000) {
                self.maxTTLMilliseconds = maxTTLMilliseconds
                self.negativeTTLMilliseconds = negativeTTLMilliseconds
                self.capacity = capacity
            }
        }

        /// When the authorization server's JWKS is fetched again.
        public struct JWKS: Sendable, Equatable {
            /// A key set is kept at least this long, whatever its `Cache-Control: max-age`. Default 60 s; 1 s...24 h.
            public var minTTLMilliseconds: Int = 60_000
            /// ...and at most this long. Default 24 h; 1 s...7 d (168 h); at least `min_ttl`.
            public var maxTTLMilliseconds: Int = 86_400_000
            /// A token with an unknown `kid` triggers at most one refetch per this interval. Default 30 s; 1 s...1 h.
            public var unknownKidIntervalMilliseconds: Int = 30_000

            public init(minTTLMilliseconds: Int = 60_000, maxTTLMilliseconds: Int = 86_400_000, unknownKidIntervalMilliseconds: Int = 30_000) {
                self.minTTLMilliseconds = minTTLMilliseconds
                self.maxTTLMilliseconds = maxTTLMilliseconds
                self.unknownKidIntervalMilliseconds = unknownKidIntervalMilliseconds
            }
        }

        /// Backoff between attempts to read the metadata while the authorization server cannot be reached.
        public struct Retry: Sendable, Equatable {
            /// The first delay; it doubles with each further failure. Default 250 ms; 1 ms...1 min.
            public var initialMilliseconds: Int = 250
            /// The delay never grows past this. Default 10 s; at least `initial`, at most 10 min.
            public var maxMilliseconds: Int = 10_000

            public init(initialMilliseconds: Int = 250, maxMilliseconds: Int = 10_000) {
                self.initialMilliseconds = initialMilliseconds
                self.maxMilliseconds = maxMilliseconds
            }
        }

        /// Required: the issuer identifier, an https URL (http only on a loopback address) without query, fragment or
        /// trailing `/` — the same rule as the authorization server's own `issuer`.
        public var issuer: String
        /// Required: the gateway's client id at the authorization server; visible ASCII without `:`.
        public var clientID: String
        /// Required: inline, `{env: NAME}` or `{file: PATH}` (relative to the configuration file's directory).
        /// Never printed: `description` redacts it.
        public var clientSecret: String
        /// Default `.tokenExchange`.
        public var exchange: Exchange = .tokenExchange
        public var cache: Cache = .init()
        public var jwks: JWKS = .init()
        /// `discovery_retry`.
        public var discoveryRetry: Retry = .init()
        /// Leeway for `exp`, `nbf` and `iat`. Default 30 s; 0...5 min.
        public var clockSkewMilliseconds: Int = 30_000
        /// Request header that carries the JWT to the backend. Default `Authorization` (as `Bearer <jwt>`); an
        /// RFC 9110 token, neither hop-by-hop nor one the gateway sets or frames the message with.
        public var forwardHeader: String = "Authorization"
        /// PEM file with the CA certificate(s) an `https` authorization server's certificate must chain to (a private
        /// CA), relative to the configuration file. Default nil: the system trust store. Only with an https issuer.
        public var caFile: String?

        public init(
            issuer: String,
            clientID: String,
            clientSecret: String,
            exchange: Exchange = .tokenExchange,
            cache: Cache = .init(),
            jwks: JWKS = .init(),
            discoveryRetry: Retry = .init(),
            clockSkewMilliseconds: Int = 30_000,
            forwardHeader: String = "Authorization",
            caFile: String? = nil
        ) {
            self.issuer = issuer
            self.clientID = clientID
            self.clientSecret = clientSecret
            self.exchange = exchange
            self.cache = cache
            self.jwks = jwks
            self.discoveryRetry = discoveryRetry
            self.clockSkewMilliseconds = clockSkewMilliseconds
            self.forwardHeader = forwardHeader
            self.caFile = caFile
        }

        /// Where the metadata is read (RFC 8414 §3.1): `<issuer>/.well-known/oauth-authorization-server` for an issuer
        /// without a path; for one with a path the well-known segment goes between the host and the path.
        public var metadataURL: String { Self.metadataURL(issuer: issuer) }

        /// `metadataURL` for any issuer: discovery reads it from here.
        public static func metadataURL(issuer: String) -> String {
            let wellKnown = "/.well-known/oauth-authorization-server"
            guard let schemeEnd = issuer.range(of: "://") else { return issuer + wellKnown }
            let afterScheme = issuer[schemeEnd.upperBound...]
            guard let pathStart = afterScheme.firstIndex(of: "/") else { return issuer + wellKnown }
            return String(issuer[..<pathStart]) + wellKnown + String(issuer[pathStart...])
        }

        public var description: String {
            "AuthorizationServer(issuer: \(issuer), clientID: \(clientID), clientSecret: <redacted>, exchange: \(exchange.rawValue), "
                + "cache: \(cache), jwks: \(jwks), discoveryRetry: \(discoveryRetry), clockSkewMilliseconds: \(clockSkewMilliseconds), "
                + "forwardHeader: \(forwardHeader), caFile: \(caFile ?? "system trust store"))"
        }

        public var debugDescription: String { description }
    }

    static func parseAuthorizationServer(_ reader: inout YAMLMappingReader, environment: [String: String], baseDirectory: String) throws -> AuthorizationServer {
        let issuer = try reader.requiredString("issuer")
        if let reason = issuerProblem(issuer, allowTrailingSlash: false) { throw reader.error("issuer", reason) }
        let clientID = try reader.requiredString("client_id")
        guard clientID.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
            throw reader.error("client_id", "must be visible ASCII without ':' (it travels in HTTP Basic credentials)")
        }
        guard let clientSecret = try reader.secret("client_secret", environment: environment, baseDirectory: baseDirectory) else {
            throw reader.error("client_secret", "is required (inline, {env: NAME} or {file: PATH})", code: .missingSecret)
        }
        var server = AuthorizationServer(issuer: issuer, clientID: clientID, clientSecret: clientSecret)

        if let text = try reader.string("exchange") {
            guard let value = AuthorizationServer.Exchange(rawValue: text) else {
                throw reader.error("exchange", "expected token_exchange or introspection_jwt, got '\(text)'")
            }
            server.exchange = value
        }

        var cache = try reader.mapping("cache")
        if let value = try cache.milliseconds("max_ttl", in: 1000...3_600_000) { server.cache.maxTTLMilliseconds = value }
        if let value = try cache.milliseconds("negative_ttl", in: 0...300_000) { server.cache.negativeTTLMilliseconds = value }
        if let value = try cache.int("capacity", range: 1...10_000_000) { server.cache.capacity = value }
        try cache.finish()

        var jwks = try reader.mapping("jwks")
        let minTTL = try jwks.milliseconds("min_ttl", in: 1000...86_400_000)
        let maxTTL = try jwks.milliseconds("max_ttl", in: 1000...604_800_000)
        if let value = try jwks.milliseconds("unknown_kid_interval", in: 1000...3_600_000) { server.jwks.unknownKidIntervalMilliseconds = value }
        try jwks.finish()
        if let minTTL { server.jwks.minTTLMilliseconds = minTTL }
        if let maxTTL { server.jwks.maxTTLMilliseconds = maxTTL }
        if server.jwks.maxTTLMilliseconds < server.jwks.minTTLMilliseconds {
            throw jwks.error(
                maxTTL != nil ? "max_ttl" : "min_ttl",
                maxTTL != nil
                    ? "must be at least min_ttl (\(server.jwks.minTTLMilliseconds)ms\(minTTL == nil ? ", the default" : ""))"
                    : "must not exceed max_ttl (\(server.jwks.maxTTLMilliseconds)ms, the default)"
            )
        }

        var retry = try reader.mapping("discovery_retry")
        if let value = try retry.milliseconds("initial", in: 1...60_000) { server.discoveryRetry.initialMilliseconds = value }
        let maxDelay = try retry.milliseconds("max", in: 1...600_000)
        try retry.finish()
        if let maxDelay { server.discoveryRetry.maxMilliseconds = maxDelay }
        if server.discoveryRetry.maxMilliseconds < server.discoveryRetry.initialMilliseconds {
            throw retry.error(
                maxDelay != nil ? "max" : "initial",
                maxDelay != nil
                    ? "must be at least initial (\(server.discoveryRetry.initialMilliseconds)ms)"
                    : "must not exceed max (\(server.discoveryRetry.maxMilliseconds)ms, the default)"
            )
        }

        if let value = try reader.milliseconds("clock_skew", in: 0...300_000) { server.clockSkewMilliseconds = value }

        if let header = try reader.string("forward_header") {
            guard !header.isEmpty, header.utf8.allSatisfy({ isTokenByte($0) }) else {
                throw reader.error("forward_header", "'\(header)' is not a header field name (RFC 9110 token)")
            }
            let lowered = header.lowercased()
            guard !reservedForwardHeaders.contains(lowered), !lowered.hasPrefix("proxy-") else {
                throw reader.error("forward_header", "'\(header)' is hop-by-hop, frames the message or is set by the gateway itself")
            }
            server.forwardHeader = header
        }
        if let path = try reader.string("ca_file") {
            guard issuer.lowercased().hasPrefix("https://") else { throw reader.error("ca_file", "is only used with an https issuer") }
            let resolved = resolve(path, against: baseDirectory)
            guard FileManager.default.isReadableFile(atPath: resolved) else { throw reader.error("ca_file", "cannot read \(resolved)") }
            server.caFile = resolved
        }
        return server
    }

    /// Why `text` is not an acceptable issuer identifier (RFC 8414 §2), or nil: an absolute https URL without query
    /// or fragment, plain http only on a loopback address; optionally without a trailing `/`.
    static func issuerProblem(_ text: String, allowTrailingSlash: Bool) -> String? {
        guard let url = ParsedURL(text), url.query == nil, url.fragment == nil else {
            return "must be an absolute http(s) URL without query or fragment, got '\(text)'"
        }
        guard url.scheme == "https" || url.isLoopback else { return "'\(text)' must use https (http is allowed only on a loopback address)" }
        guard allowTrailingSlash || !text.hasSuffix("/") else { return "must not end with '/'" }
        return nil
    }
}
