import Foundation
import Yams

/// Everything the gateway reads from its YAML file, validated completely at load.
/// Every optional field has a documented default; durations are whole milliseconds.
public struct GatewayConfiguration: Sendable, Equatable {
    /// A socket the gateway accepts client connections on.
    public struct Listener: Sendable, Equatable {
        /// TLS on a listener. The files are only required to be named here; they are read when the listener starts.
        public struct TLS: Sendable, Equatable {
            /// PEM certificate (chain), resolved against the configuration file's directory unless absolute.
            public var certificateFile: String
            /// PEM private key, resolved against the configuration file's directory unless absolute.
            public var privateKeyFile: String
            /// Offer HTTP/2 (`h2`) next to HTTP/1.1 via ALPN. Default true.
            public var http2: Bool = true

            public init(certificateFile: String, privateKeyFile: String, http2: Bool = true) {
                self.certificateFile = certificateFile
                self.privateKeyFile = privateKeyFile
                self.http2 = http2
            }
        }

        /// Default `127.0.0.1`.
        public var host: String = "127.0.0.1"
        /// Required; 0 asks the system for a free port (tests).
        public var port: Int
        /// Plain HTTP when nil.
        public var tls: TLS?

        public init(host: String = "127.0.0.1", port: Int, tls: TLS? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
        }
    }

    /// The admin listener (health, readiness, metrics), never exposed with the traffic listeners.
    public struct Admin: Sendable, Equatable {
        /// Default `127.0.0.1`.
        public var host: String = "127.0.0.1"
        /// Default `9901`.
        public var port: Int = 9901

        public init(host: String = "127.0.0.1", port: Int = 9901) {
            self.host = host
            self.port = port
        }
    }

    /// Limits applied to every client request.
    public struct Limits: Sendable, Equatable {
        /// Request line plus all header fields, in bytes. Default 16384 (16 KiB); 1024...1048576.
        public var maxHeaderBytes: Int = 16384
        /// Number of header fields. Default 100; 1...1000.
        public var maxHeaderCount: Int = 100
        /// Request body size for routes that do not set their own. Default 10485760 (10 MiB); 0...2^40.
        public var maxBodyBytes: Int = 10 << 20
        /// Time allowed from the first byte of a request to the end of its header. Default 10 s.
        public var headerReadTimeoutMilliseconds: Int = 10_000
        /// A client connection with no request in flight is closed after this long. Default 60 s.
        public var idleTimeoutMilliseconds: Int = 60_000
        /// On shutdown, requests in flight get this long to finish before connections are closed. Default 30 s; 0 closes at once.
        public var drainTimeoutMilliseconds: Int = 30_000

        public init(
            maxHeaderBytes: Int = 16384,
            maxHeaderCount: Int = 100,
            maxBodyBytes: Int = 10 << 20,
            headerReadTimeoutMilliseconds: Int = 10_000,
            idleTimeoutMilliseconds: Int = 60_000,
            drainTimeoutMilliseconds: Int = 30_000
        ) {
            self.maxHeaderBytes = maxHeaderBytes
            self.maxHeaderCount = maxHeaderCount
            self.maxBodyBytes = maxBodyBytes
            self.headerReadTimeoutMilliseconds = headerReadTimeoutMilliseconds
            self.idleTimeoutMilliseconds = idleTimeoutMilliseconds
            self.drainTimeoutMilliseconds = drainTimeoutMilliseconds
        }
    }

    /// A named group of equivalent upstream servers.
    public struct Cluster: Sendable, Equatable {
        /// How a request picks a target.
        public enum LoadBalancing: String, Sendable, Equatable, CaseIterable {
            /// Targets in turn.
            case roundRobin = "round_robin"
            /// The target with the fewest requests in flight.
            case leastRequest = "least_request"
        }

        /// One upstream server (plain HTTP for now).
        public struct Target: Sendable, Hashable, CustomStringConvertible {
            /// A host name or IP address; an IPv6 literal without brackets.
            public var host: String
            public var port: Int

            public init(host: String, port: Int) {
                self.host = host
                self.port = port
            }

            public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        }

        /// Upstream connection pool, per target.
        public struct Pool: Sendable, Equatable {
            /// Connections open at once. Default 1024; 1...65536.
            public var maxConnections: Int = 1024
            /// Idle connections kept for reuse. Default 128; 0...max_connections.
            public var maxIdle: Int = 128
            /// An idle connection is closed after this long. Default 60 s.
            public var idleTimeoutMilliseconds: Int = 60_000
            /// Requests that wait for a connection to one target, per event loop, once `max_connections` are open;
            /// the next one is refused with 503. Default 4096; 0...1048576 (0: refuse at once).
            public var maxPending: Int = 4096

            public init(maxConnections: Int = 1024, maxIdle: Int = 128, idleTimeoutMilliseconds: Int = 60_000, maxPending: Int = 4096) {
                self.maxConnections = maxConnections
                self.maxIdle = maxIdle
                self.idleTimeoutMilliseconds = idleTimeoutMilliseconds
                self.maxPending = maxPending
            }
        }

        /// Active health checking: `GET path` on every target; 2xx counts as healthy.
        public struct HealthCheck: Sendable, Equatable {
            /// Required; starts with `/`.
            public var path: String
            /// Default 5 s.
            public var intervalMilliseconds: Int = 5000
            /// Default 1 s; at most the interval.
            public var timeoutMilliseconds: Int = 1000
            /// Consecutive successes before an unhealthy target takes traffic again. Default 2; 1...100.
            public var healthyThreshold: Int = 2
            /// Consecutive failures before a healthy target stops taking traffic. Default 3; 1...100.
            public var unhealthyThreshold: Int = 3

            public init(path: String, intervalMilliseconds: Int = 5000, timeoutMilliseconds: Int = 1000, healthyThreshold: Int = 2, unhealthyThreshold: Int = 3) {
                self.path = path
                self.intervalMilliseconds = intervalMilliseconds
                self.timeoutMilliseconds = timeoutMilliseconds
                self.healthyThreshold = healthyThreshold
                self.unhealthyThreshold = unhealthyThreshold
            }
        }

        /// Passive health: a target that keeps failing real requests is ejected for a while.
        public struct OutlierDetection: Sendable, Equatable {
            /// Consecutive failures (connect errors, 5xx) that eject a target. Default 5; 0 turns ejection off; 0...1000.
            public var consecutiveFailures: Int = 5
            /// How long an ejected target gets no traffic. Default 30 s.
            public var ejectionTimeMilliseconds: Int = 30_000

            public init(consecutiveFailures: Int = 5, ejectionTimeMilliseconds: Int = 30_000) {
                self.consecutiveFailures = consecutiveFailures
                self.ejectionTimeMilliseconds = ejectionTimeMilliseconds
            }
        }

        /// Retries of failed tries.
        public struct Retries: Sendable, Equatable {
            /// Retries after the first try (so at most `attempts + 1` tries). Default 2; 0...10.
            public var attempts: Int = 2
            /// Retry budget: retries may add at most this percentage to the cluster's requests. Default 20; 0...100.
            public var budgetPercent: Int = 20
            /// Backoff before the first retry; it doubles with each further retry. Default 25 ms.
            public var backoffBaseMilliseconds: Int = 25
            /// The backoff never grows past this. Default 250 ms; at least the base.
            public var backoffMaxMilliseconds: Int = 250

            public init(attempts: Int = 2, budgetPercent: Int = 20, backoffBaseMilliseconds: Int = 25, backoffMaxMilliseconds: Int = 250) {
                self.attempts = attempts
                self.budgetPercent = budgetPercent
                self.backoffBaseMilliseconds = backoffBaseMilliseconds
                self.backoffMaxMilliseconds = backoffMaxMilliseconds
            }
        }

        /// Required and unique; letters, digits, `-`, `_` and `.` (it appears in logs and metrics).
        public var name: String
        /// Required, at least one, no duplicates.
        public var targets: [Target]
        /// Default `.roundRobin`.
        public var loadBalancing: LoadBalancing = .roundRobin
        /// Time allowed to open a connection to a target. Default 2 s.
        public var connectTimeoutMilliseconds: Int = 2000
        public var pool: Pool = .init()
        /// No active health checking when nil (the default).
        public var healthCheck: HealthCheck?
        public var outlierDetection: OutlierDetection = .init()
        public var retries: Retries = .init()

        public init(
            name: String,
            targets: [Target],
            loadBalancing: LoadBalancing = .roundRobin,
            connectTimeoutMilliseconds: Int = 2000,
            pool: Pool = .init(),
            healthCheck: HealthCheck? = nil,
            outlierDetection: OutlierDetection = .init(),
            retries: Retries = .init()
        ) {
            self.name = name
            self.targets = targets
            self.loadBalancing = loadBalancing
            self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
            self.pool = pool
            self.healthCheck = healthCheck
            self.outlierDetection = outlierDetection
            self.retries = retries
        }
    }

    /// Which requests go to which cluster.
    public struct Route: Sendable, Equatable {
        /// What a request must look like to take this route; every condition given must hold, and a route without
        /// conditions takes every request.
        public struct Match: Sendable, Equatable {
            /// The request's host (`Host` / `:authority`), lower-cased. Any host when nil.
            public var host: String?
            /// Requests whose path starts with this. Starts with `/`; excludes `path`.
            public var pathPrefix: String?
            /// Requests with exactly this path. Starts with `/`; excludes `pathPrefix`.
            public var path: String?
            /// Upper-case method tokens; any method when empty (the default).
            public var methods: [String] = []

            public init(host: String? = nil, pathPrefix: String? = nil, path: String? = nil, methods: [String] = []) {
                self.host = host
                self.pathPrefix = pathPrefix
                self.path = path
                self.methods = methods
            }
        }

        /// Upstream time limits.
        public struct Timeouts: Sendable, Equatable {
            /// One try (connect, send, complete response). Default 15 s, or `total` when that is shorter; at most `total`.
            public var perTryMilliseconds: Int = 15_000
            /// All tries and backoffs together. Default 30 s.
            public var totalMilliseconds: Int = 30_000
            /// A protocol-upgrade tunnel (WebSocket) with no bytes either way for this long is closed (`tunnel_idle`).
            /// Default 10 minutes: longer than the ping interval of common WebSocket clients (20-60 s).
            public var tunnelIdleMilliseconds: Int = 600_000

            public init(perTryMilliseconds: Int = 15_000, totalMilliseconds: Int = 30_000) {
                self.perTryMilliseconds = perTryMilliseconds
                self.totalMilliseconds = totalMilliseconds
            }
        }

        /// Token validation on the route (`auth:`). What the gateway does with a request depends on `mode`; a route
        /// with a mode other than `none` needs the top-level `authorization_server` section.
        public struct Auth: Sendable, Equatable {
            /// Which access tokens the route takes.
            public enum Mode: String, Sendable, Equatable, CaseIterable {
                /// No token is needed or checked (`none`; named `off` so it never reads as `Optional.none`).
                case off = "none"
                /// A JWT access token, verified against the authorization server's JWKS.
                case jwt
                /// An opaque access token, exchanged for (or introspected into) a JWT at the authorization server.
                case opaque
                /// Either: a token that looks like a JWT is verified as one, anything else is treated as opaque.
                case any

                /// Whether a request needs a token at all.
                public var requiresToken: Bool { self != .off }
                /// Whether a JWT presented by the client is accepted as it is.
                public var acceptsJWT: Bool { self == .jwt || self == .any }
                /// Whether an opaque token presented by the client is accepted (and turned into a JWT).
                public var acceptsOpaque: Bool { self == .opaque || self == .any }
            }

            /// Required in the section.
            public var mode: Mode
            /// Scope tokens (RFC 6749 §3.3) the token must carry, all of them. Default none.
            public var scopesAllOf: [String] = []
            /// Scope tokens of which the token must carry at least one; no requirement when empty (the default).
            public var scopesAnyOf: [String] = []
            /// Accepted `aud` values: the token's audience must contain one of them. Empty (the default) accepts any
            /// audience.
            public var audiences: [String] = []
            /// Accepted `iss` values (https URLs, http only on loopback). Default: the `authorization_server.issuer`;
            /// empty only with mode `none`.
            public var issuers: [String] = []
            /// Realm in `WWW-Authenticate: Bearer realm="…"` challenges. Default `gatehouse`; printable ASCII (spaces
            /// allowed) without `"` and `\`.
            public var realm: String = "gatehouse"

            public init(mode: Mode, scopesAllOf: [String] = [], scopesAnyOf: [String] = [], audiences: [String] = [], issuers: [String] = [], realm: String = "gatehouse") {
                self.mode = mode
                self.scopesAllOf = scopesAllOf
                self.scopesAnyOf = scopesAnyOf
                self.audiences = audiences
                self.issuers = issuers
                self.realm = realm
            }
        }

        /// Unique. Default `route-<index>` (its position in the list, from 0).
        public var name: String
        public var match: Match = .init()
        /// Required: the name of a cluster.
        public var cluster: String
        /// Remove `match.pathPrefix` from the path before forwarding. Default false; needs `pathPrefix`.
        public var stripPrefix: Bool = false
        /// Replace `match.pathPrefix` with this before forwarding. Starts with `/`; needs `pathPrefix`; excludes `stripPrefix`.
        public var rewritePrefix: String?
        public var timeouts: Timeouts = .init()
        /// Request body limit: the route's `max_body_bytes`, else `limits.max_body_bytes`.
        public var maxBodyBytes: Int = 10 << 20
        /// No token validation when nil (the default), the same as mode `none`.
        public var auth: Auth?
        /// Protocols a client may upgrade to on this route (`Upgrade` tokens, lower-case). A request asking for any
        /// other is forwarded without its `Upgrade`. Default `[websocket]`; `h2c` can never be listed.
        public var upgrades: [String] = ["websocket"]

        public init(
            name: String,
            match: Match = .init(),
            cluster: String,
            stripPrefix: Bool = false,
            rewritePrefix: String? = nil,
            timeouts: Timeouts = .init(),
            maxBodyBytes: Int = 10 << 20,
            auth: Auth? = nil
        ) {
            self.name = name
            self.match = match
            self.cluster = cluster
            self.stripPrefix = stripPrefix
            self.rewritePrefix = rewritePrefix
            self.timeouts = timeouts
            self.maxBodyBytes = maxBodyBytes
            self.auth = auth
        }
    }

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

    /// Required, at least one.
    public var listeners: [Listener]
    /// Event loop threads. Default nil: one per core; 1...256.
    public var eventLoopThreads: Int?
    /// No admin listener when nil (the default). A present `admin:` section defaults to 127.0.0.1:9901.
    public var admin: Admin?
    public var limits: Limits = .init()
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed. Default none.
    public var trustedProxies: [CIDR] = []
    /// `request_hygiene:` (see `RequestHygiene`).
    public var requestHygiene: RequestHygiene = .init()
    /// Where tokens are validated. Nil (the default) when the section is absent; then every route's mode must be `none`.
    public var authorizationServer: AuthorizationServer?
    /// Required, at least one.
    public var clusters: [Cluster]

    /// Points the gateway at another issuer (the demo's `--auth-port`): the `authorization_server` section and every
    /// route that accepted the old issuer follow.
    public mutating func replaceAuthorizationServerIssuer(with issuer: String) {
        guard let old = authorizationServer?.issuer else { return }
        authorizationServer?.issuer = issuer
        for index in routes.indices {
            if let position = routes[index].auth?.issuers.firstIndex(of: old) { routes[index].auth?.issuers[position] = issuer }
        }
    }
    /// Required, at least one; in file order.
    public var routes: [Route]

    public init(
        listeners: [Listener],
        eventLoopThreads: Int? = nil,
        admin: Admin? = nil,
        limits: Limits = .init(),
        trustedProxies: [CIDR] = [],
        authorizationServer: AuthorizationServer? = nil,
        clusters: [Cluster],
        routes: [Route]
    ) {
        self.listeners = listeners
        self.eventLoopThreads = eventLoopThreads
        self.admin = admin
        self.limits = limits
        self.trustedProxies = trustedProxies
        self.authorizationServer = authorizationServer
        self.clusters = clusters
        self.routes = routes
    }

    /// Loads and validates a file completely; the error names the file and the key.
    /// Relative TLS and secret file names are resolved against the file's directory.
    public static func load(file: String, environment: [String: String]) throws -> GatewayConfiguration {
        let (text, directory) = try ConfigurationFile.read(file)
        return try parse(yaml: text, file: file, environment: environment, baseDirectory: directory)
    }

    /// Parses and validates YAML text. Relative TLS and secret file names are resolved against `baseDirectory`;
    /// `{env: NAME}` secrets are looked up in `environment`.
    public static func parse(yaml: String, file: String = "<string>", environment: [String: String] = [:], baseDirectory: String = ".") throws -> GatewayConfiguration {
        var root = try ConfigurationFile.root(yaml: yaml, file: file)

        // Listeners.
        var listeners: [Listener] = []
        var addresses: [(host: String, port: Int, keyPath: String)] = []
        for var reader in try root.list("listeners") ?? [] {
            var listener = Listener(port: 0)
            if let host = try reader.hostString("host") { listener.host = host }
            guard let port = try reader.int("port", range: 0...65535) else { throw reader.error("port", "is required", code: .missingKey) }
            listener.port = port
            if reader.node("tls") != nil {
                var tls = try reader.mapping("tls")
                let certificate = try tls.requiredString("certificate")
                let privateKey = try tls.requiredString("private_key")
                let http2 = try tls.bool("http2") ?? true
                try tls.finish()
                listener.tls = Listener.TLS(
                    certificateFile: resolve(certificate, against: baseDirectory),
                    privateKeyFile: resolve(privateKey, against: baseDirectory),
                    http2: http2
                )
            }
            try reader.finish()
            try checkAddressIsFree(listener.host, listener.port, keyPath: reader.keyPath("port"), used: &addresses, file: file)
            listeners.append(listener)
        }
        guard !listeners.isEmpty else { throw root.error("listeners", "list at least one listener", code: .missingKey) }

        let eventLoopThreads = try root.int("event_loop_threads", range: 1...256)

        var admin: Admin?
        if root.node("admin") != nil {
            var reader = try root.mapping("admin")
            var value = Admin()
            if let host = try reader.hostString("host") { value.host = host }
            if let port = try reader.int("port", range: 0...65535) { value.port = port }
            try reader.finish()
            try checkAddressIsFree(value.host, value.port, keyPath: reader.keyPath("port"), used: &addresses, file: file)
            admin = value
        }

        // Limits.
        var limits = Limits()
        var limitsReader = try root.mapping("limits")
        if let value = try limitsReader.int("max_header_bytes", range: 1024...1_048_576) { limits.maxHeaderBytes = value }
        if let value = try limitsReader.int("max_header_count", range: 1...1000) { limits.maxHeaderCount = value }
        if let value = try limitsReader.int("max_body_bytes", range: 0...(1 << 40)) { limits.maxBodyBytes = value }
        if let value = try limitsReader.milliseconds("header_read_timeout", minimum: 1) { limits.headerReadTimeoutMilliseconds = value }
        if let value = try limitsReader.milliseconds("idle_timeout", minimum: 1) { limits.idleTimeoutMilliseconds = value }
        if let value = try limitsReader.milliseconds("drain_timeout", minimum: 0) { limits.drainTimeoutMilliseconds = value }
        try limitsReader.finish()

        // Trusted proxies.
        var trustedProxies: [CIDR] = []
        for (index, text) in (try root.stringList("trusted_proxies") ?? []).enumerated() {
            guard let cidr = CIDR.parse(text) else {
                throw root.itemError(
                    "trusted_proxies", index,
                    "'\(text)' is not a CIDR block: expected an IPv4 or IPv6 address with an optional /prefix length, host bits zero (e.g. 10.0.0.0/8, ::1/128)"
                )
            }
            trustedProxies.append(cidr)
        }

        var requestHygiene = RequestHygiene()
        if root.node("request_hygiene") != nil {
            var reader = try root.mapping("request_hygiene")
            requestHygiene = try parseRequestHygiene(&reader)
            try reader.finish()
        }

        // Clusters.
        var clusters: [Cluster] = []
        for var reader in try root.list("clusters") ?? [] {
            let cluster = try parseCluster(&reader)
            guard !clusters.contains(where: { $0.name == cluster.name }) else {
                throw reader.error("name", "cluster '\(cluster.name)' is defined twice")
            }
            try reader.finish()
            clusters.append(cluster)
        }
        guard !clusters.isEmpty else { throw root.error("clusters", "list at least one cluster", code: .missingKey) }

        // The authorization server (before the routes, whose auth sections need it).
        var authorizationServer: AuthorizationServer?
        if root.node("authorization_server") != nil {
            var reader = try root.mapping("authorization_server")
            authorizationServer = try parseAuthorizationServer(&reader, environment: environment, baseDirectory: baseDirectory)
            try reader.finish()
        }

        // Routes.
        var routes: [Route] = []
        for (index, var reader) in (try root.list("routes") ?? []).enumerated() {
            let route = try parseRoute(
                &reader, index: index, clusters: clusters, defaultMaxBodyBytes: limits.maxBodyBytes, authorizationServer: authorizationServer
            )
            guard !routes.contains(where: { $0.name == route.name }) else {
                throw reader.error("name", "route '\(route.name)' is defined twice")
            }
            try reader.finish()
            routes.append(route)
        }
        guard !routes.isEmpty else { throw root.error("routes", "list at least one route", code: .missingKey) }

        try root.finish()
        var configuration = GatewayConfiguration(
            listeners: listeners,
            eventLoopThreads: eventLoopThreads,
            admin: admin,
            limits: limits,
            trustedProxies: trustedProxies,
            authorizationServer: authorizationServer,
            clusters: clusters,
            routes: routes
        )
        configuration.requestHygiene = requestHygiene
        return configuration
    }

    private static func resolve(_ path: String, against directory: String) -> String {
        path.hasPrefix("/") ? path : "\(directory)/\(path)"
    }

    /// Refuses two sockets on the same host and port (port 0 never collides).
    private static func checkAddressIsFree(_ host: String, _ port: Int, keyPath: String, used: inout [(host: String, port: Int, keyPath: String)], file: String) throws {
        guard port != 0 else { return }
        if let earlier = used.first(where: { $0.host == host && $0.port == port }) {
            throw ConfigurationError(code: .invalidValue, file: file, keyPath: keyPath, reason: "\(host):\(port) is already used by \(earlier.keyPath)")
        }
        used.append((host, port, keyPath))
    }

    private static func parseCluster(_ reader: inout YAMLMappingReader) throws -> Cluster {
        let name = try reader.requiredString("name")
        guard name.utf8.allSatisfy({ isNameByte($0) }) else {
            throw reader.error("name", "'\(name)' may contain only letters, digits, '-', '_' and '.'")
        }

        var targets: [Cluster.Target] = []
        let targetTexts = try reader.stringList("targets") ?? []
        guard !targetTexts.isEmpty else { throw reader.error("targets", "list at least one target", code: .missingKey) }
        for (index, text) in targetTexts.enumerated() {
            let target = try parseTarget(text) { reason in reader.itemError("targets", index, reason) }
            guard !targets.contains(target) else { throw reader.itemError("targets", index, "\(target) is listed twice") }
            targets.append(target)
        }

        var cluster = Cluster(name: name, targets: targets)
        if let text = try reader.string("load_balancing") {
            guard let value = Cluster.LoadBalancing(rawValue: text) else {
                throw reader.error("load_balancing", "expected round_robin or least_request, got '\(text)'")
            }
            cluster.loadBalancing = value
        }
        if let value = try reader.milliseconds("connect_timeout", minimum: 1) { cluster.connectTimeoutMilliseconds = value }

        var pool = try reader.mapping("pool")
        if let value = try pool.int("max_connections", range: 1...65536) { cluster.pool.maxConnections = value }
        if let value = try pool.int("max_idle", range: 0...65536) { cluster.pool.maxIdle = value }
        if let value = try pool.milliseconds("idle_timeout", minimum: 1) { cluster.pool.idleTimeoutMilliseconds = value }
        if let value = try pool.int("max_pending", range: 0...1_048_576) { cluster.pool.maxPending = value }
        try pool.finish()
        if cluster.pool.maxIdle > cluster.pool.maxConnections {
            throw pool.error("max_idle", "must not exceed max_connections (\(cluster.pool.maxConnections))")
        }

        if reader.node("health_check") != nil {
            var check = try reader.mapping("health_check")
            let path = try check.requiredString("path")
            guard isRequestPath(path) else { throw check.error("path", "must start with '/' and contain no spaces, '?' or '#', got '\(path)'") }
            var value = Cluster.HealthCheck(path: path)
            if let interval = try check.milliseconds("interval", minimum: 1) { value.intervalMilliseconds = interval }
            if let timeout = try check.milliseconds("timeout", minimum: 1) { value.timeoutMilliseconds = timeout }
            if let threshold = try check.int("healthy_threshold", range: 1...100) { value.healthyThreshold = threshold }
            if let threshold = try check.int("unhealthy_threshold", range: 1...100) { value.unhealthyThreshold = threshold }
            try check.finish()
            if value.timeoutMilliseconds > value.intervalMilliseconds {
                throw check.error("timeout", "must not exceed interval (\(value.intervalMilliseconds)ms)")
            }
            cluster.healthCheck = value
        }

        var outlier = try reader.mapping("outlier_detection")
        if let value = try outlier.int("consecutive_failures", range: 0...1000) { cluster.outlierDetection.consecutiveFailures = value }
        if let value = try outlier.milliseconds("ejection_time", minimum: 1) { cluster.outlierDetection.ejectionTimeMilliseconds = value }
        try outlier.finish()

        var retries = try reader.mapping("retries")
        if let value = try retries.int("attempts", range: 0...10) { cluster.retries.attempts = value }
        if let value = try retries.int("budget_percent", range: 0...100) { cluster.retries.budgetPercent = value }
        if let value = try retries.milliseconds("backoff_base", minimum: 0) { cluster.retries.backoffBaseMilliseconds = value }
        if let value = try retries.milliseconds("backoff_max", minimum: 0) { cluster.retries.backoffMaxMilliseconds = value }
        try retries.finish()
        if cluster.retries.backoffMaxMilliseconds < cluster.retries.backoffBaseMilliseconds {
            throw retries.error("backoff_max", "must be at least backoff_base (\(cluster.retries.backoffBaseMilliseconds)ms)")
        }
        return cluster
    }

    /// `http://host:port`, optionally with a trailing `/`; nothing else for now.
    private static func parseTarget(_ text: String, error: (String) -> ConfigurationError) throws -> Cluster.Target {
        guard let url = ParsedURL(text) else { throw error("'\(text)' is not an absolute http URL such as http://127.0.0.1:8081") }
        guard url.scheme == "http" else { throw error("'\(text)': only http targets are supported for now") }
        guard url.path.isEmpty || url.path == "/", url.query == nil, url.fragment == nil else {
            throw error("'\(text)': a target is scheme, host and port only (no path, query or fragment)")
        }
        guard let port = url.port else { throw error("'\(text)': a target must give its port") }
        var host = url.host
        if host.hasPrefix("[") {
            host = String(host.dropFirst().dropLast())
            guard let bytes = CIDR.parseAddress(host), bytes.count == 16 else { throw error("'\(text)': '\(host)' is not an IPv6 address") }
        }
        return Cluster.Target(host: host, port: port)
    }

    private static func parseAuthorizationServer(_ reader: inout YAMLMappingReader, environment: [String: String], baseDirectory: String) throws -> AuthorizationServer {
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

    /// Header fields that cannot carry the JWT: hop-by-hop (stripped on the way), message framing, and the ones the
    /// gateway writes itself.
    private static let reservedForwardHeaders: Set<String> = [
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
        "host", "content-length", "content-type", "expect",
        "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "x-request-id",
    ]

    /// Why `text` is not an acceptable issuer identifier (RFC 8414 §2), or nil: an absolute https URL without query
    /// or fragment, plain http only on a loopback address; optionally without a trailing `/`.
    private static func issuerProblem(_ text: String, allowTrailingSlash: Bool) -> String? {
        guard let url = ParsedURL(text), url.query == nil, url.fragment == nil else {
            return "must be an absolute http(s) URL without query or fragment, got '\(text)'"
        }
        guard url.scheme == "https" || url.isLoopback else { return "'\(text)' must use https (http is allowed only on a loopback address)" }
        guard allowTrailingSlash || !text.hasSuffix("/") else { return "must not end with '/'" }
        return nil
    }

    private static func parseAuth(_ reader: inout YAMLMappingReader, authorizationServer: AuthorizationServer?) throws -> Route.Auth {
        let modeText = try reader.requiredString("mode")
        guard let mode = Route.Auth.Mode(rawValue: modeText) else {
            throw reader.error("mode", "expected none, jwt, opaque or any, got '\(modeText)'")
        }
        if mode.requiresToken && authorizationServer == nil {
            throw reader.error("mode", "mode \(modeText) needs the top-level authorization_server section")
        }
        var auth = Route.Auth(mode: mode)
        if mode.requiresToken, let authorizationServer { auth.issuers = [authorizationServer.issuer] }

        var given: [String] = []
        for key in ["scopes_all_of", "scopes_any_of"] {
            guard let scopes = try reader.stringList(key) else { continue }
            given.append(key)
            var unique: [String] = []
            for (index, scope) in scopes.enumerated() {
                guard ScopeSyntax.isValidToken(scope) else {
                    throw reader.itemError(key, index, "'\(scope)' is not a valid scope token (RFC 6749 §3.3)")
                }
                if !unique.contains(scope) { unique.append(scope) }
            }
            if key == "scopes_all_of" { auth.scopesAllOf = unique } else { auth.scopesAnyOf = unique }
        }
        if let audiences = try reader.stringList("audiences") {
            given.append("audiences")
            for audience in audiences where !auth.audiences.contains(audience) { auth.audiences.append(audience) }
        }
        if let issuers = try reader.stringList("issuers") {
            given.append("issuers")
            guard !issuers.isEmpty else { throw reader.error("issuers", "list at least one issuer, or leave the key out for authorization_server.issuer") }
            var unique: [String] = []
            for (index, issuer) in issuers.enumerated() {
                if let reason = issuerProblem(issuer, allowTrailingSlash: true) { throw reader.itemError("issuers", index, reason) }
                if !unique.contains(issuer) { unique.append(issuer) }
            }
            auth.issuers = unique
        }
        if let realm = try reader.string("realm") {
            given.append("realm")
            guard !realm.isEmpty, realm.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) else {
                throw reader.error("realm", "must be non-empty printable ASCII without '\"' or '\\' (it is quoted in WWW-Authenticate)")
            }
            auth.realm = realm
        }
        if !mode.requiresToken, let key = given.first {
            throw reader.error(key, "has no effect with mode none")
        }
        return auth
    }

    private static func parseRoute(
        _ reader: inout YAMLMappingReader, index: Int, clusters: [Cluster], defaultMaxBodyBytes: Int, authorizationServer: AuthorizationServer?
    ) throws -> Route {
        let name = try reader.string("name") ?? "route-\(index)"
        guard !name.isEmpty, name.utf8.allSatisfy({ isNameByte($0) }) else {
            throw reader.error("name", "'\(name)' may contain only letters, digits, '-', '_' and '.'")
        }
        let clusterName = try reader.requiredString("cluster")
        guard clusters.contains(where: { $0.name == clusterName }) else {
            let known = clusters.map(\.name).joined(separator: ", ")
            throw reader.error("cluster", "no cluster named '\(clusterName)' (clusters: \(known))")
        }
        var route = Route(name: name, cluster: clusterName, maxBodyBytes: defaultMaxBodyBytes)

        var match = try reader.mapping("match")
        if let host = try match.hostString("host") { route.match.host = host.lowercased() }
        for key in ["path_prefix", "path"] {
            guard let value = try match.string(key) else { continue }
            guard isRequestPath(value) else { throw match.error(key, "must start with '/' and contain no spaces, '?' or '#', got '\(value)'") }
            if key == "path" { route.match.path = value } else { route.match.pathPrefix = value }
        }
        if route.match.path != nil && route.match.pathPrefix != nil {
            throw match.error("path", "give path_prefix or path, not both")
        }
        for (methodIndex, method) in (try match.stringList("methods") ?? []).enumerated() {
            guard method.utf8.allSatisfy({ isTokenByte($0) && !(UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) }) else {
                throw match.itemError("methods", methodIndex, "'\(method)' is not an upper-case method token such as GET")
            }
            if !route.match.methods.contains(method) { route.match.methods.append(method) }
        }
        try match.finish()

        if let strip = try reader.bool("strip_prefix") {
            if strip && route.match.pathPrefix == nil { throw reader.error("strip_prefix", "needs match.path_prefix") }
            route.stripPrefix = strip
        }
        if let rewrite = try reader.string("rewrite_prefix") {
            guard route.match.pathPrefix != nil else { throw reader.error("rewrite_prefix", "needs match.path_prefix") }
            guard isRequestPath(rewrite) else { throw reader.error("rewrite_prefix", "must start with '/' and contain no spaces, '?' or '#', got '\(rewrite)'") }
            guard !route.stripPrefix else { throw reader.error("rewrite_prefix", "give strip_prefix or rewrite_prefix, not both") }
            route.rewritePrefix = rewrite
        }

        var timeouts = try reader.mapping("timeouts")
        let perTry = try timeouts.milliseconds("per_try", minimum: 1)
        let total = try timeouts.milliseconds("total", minimum: 1)
        if let value = try timeouts.milliseconds("tunnel_idle", minimum: 1) { route.timeouts.tunnelIdleMilliseconds = value }
        try timeouts.finish()
        if let total { route.timeouts.totalMilliseconds = total }
        if let perTry {
            guard perTry <= route.timeouts.totalMilliseconds else {
                throw timeouts.error("per_try", "must not exceed total (\(route.timeouts.totalMilliseconds)ms\(total == nil ? ", the default" : ""))")
            }
            route.timeouts.perTryMilliseconds = perTry
        } else {
            route.timeouts.perTryMilliseconds = min(route.timeouts.perTryMilliseconds, route.timeouts.totalMilliseconds)
        }

        if let value = try reader.int("max_body_bytes", range: 0...(1 << 40)) { route.maxBodyBytes = value }
        if let upgrades = try parseUpgrades(&reader) { route.upgrades = upgrades }

        if reader.node("auth") != nil {
            var auth = try reader.mapping("auth")
            route.auth = try parseAuth(&auth, authorizationServer: authorizationServer)
            try auth.finish()
        }
        return route
    }

    /// Letters, digits, `-`, `_`, `.`.
    private static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }

    /// RFC 9110 `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        if isNameByte(byte) { return true }
        return "!#$%&'*+^`|~".utf8.contains(byte)
    }

    /// An origin-form path: starts with `/`, visible ASCII, no query or fragment.
    private static func isRequestPath(_ text: String) -> Bool {
        text.hasPrefix("/") && text.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }
    }
}

extension YAMLMappingReader {
    /// An error about item `index` of the list under `key`, e.g. `trusted_proxies[1]`.
    func itemError(_ key: String, _ index: Int, _ reason: String, code: ConfigurationError.Code = .invalidValue) -> ConfigurationError {
        ConfigurationError(code: code, file: file, keyPath: "\(keyPath(key))[\(index)]", reason: reason)
    }

    /// A millisecond duration (see `milliseconds(_:minimum:)`) within `range`; the error gives the bounds in the
    /// largest whole unit (`must be between 1s and 1h`).
    fileprivate mutating func milliseconds(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = try milliseconds(key, minimum: 0) else { return nil }
        guard range.contains(value) else {
            throw error(key, "must be between \(Self.formatMilliseconds(range.lowerBound)) and \(Self.formatMilliseconds(range.upperBound)), got \(Self.formatMilliseconds(value))")
        }
        return value
    }

    /// `0`, `250ms`, `30s`, `5m`, `24h`: the largest unit that divides the value.
    fileprivate static func formatMilliseconds(_ value: Int) -> String {
        if value == 0 { return "0" }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] where value % size == 0 { return "\(value / size)\(unit)" }
        return "\(value)ms"
    }

    /// A host name or address to listen on or match: non-empty visible ASCII without `/`, `@` or spaces.
    fileprivate mutating func hostString(_ key: String) throws -> String? {
        guard let value = try string(key) else { return nil }
        guard !value.isEmpty, value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "@") }) else {
            throw error(key, "'\(value)' is not a host name or address")
        }
        return value
    }
}

extension GatewayConfiguration {
    /// An IP address block (see `CIDR`, shared with the authorization server's configuration).
    public typealias CIDR = GatehouseConfiguration.CIDR
}
