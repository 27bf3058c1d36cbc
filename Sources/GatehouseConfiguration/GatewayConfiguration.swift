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
    /// `tracing:` (see `TracingConfiguration`).
    public var tracing: TracingConfiguration = .init()
    /// `redis:` (see `Redis`): the server cluster-wide rate limits share. Default nil (no Redis).
    public var redis: Redis?
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
    /// `access_log: {path: stdout | FILE}`: one JSON line per request. Default nil (none).
    public var accessLog: AccessLogSettings?

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

        let tracing = try TracingConfiguration.parseSection(&root, gateway: true)
        var redis: Redis?
        if root.node("redis") != nil {
            var reader = try root.mapping("redis")
            redis = try parseRedis(&reader, environment: environment, baseDirectory: baseDirectory)
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
        // A cluster limit without Redis is refused rather than quietly enforced per gateway (N gateways would admit N
        // times the limit).
        if redis == nil {
            for (routeIndex, route) in routes.enumerated() {
                for (limitIndex, limit) in route.rateLimits.enumerated() where limit.scope == .cluster {
                    throw ConfigurationError(
                        code: .missingKey, file: root.file, keyPath: "routes[\(routeIndex)].rate_limits[\(limitIndex)].scope",
                        reason: "scope: cluster needs the top-level redis: section (redis: {url: \"redis://host:6379\"}) that the gateways share"
                    )
                }
            }
        }

        let accessLog = try root.accessLog(baseDirectory: baseDirectory)

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
        configuration.accessLog = accessLog
        configuration.tracing = tracing
        configuration.redis = redis
        return configuration
    }

    static func resolve(_ path: String, against directory: String) -> String {
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

    /// Header fields that cannot carry the JWT: hop-by-hop (stripped on the way), message framing, and the ones the
    /// gateway writes itself.
    static let reservedForwardHeaders: Set<String> = [
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
        "host", "content-length", "content-type", "expect",
        "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "x-request-id",
    ]

    /// Letters, digits, `-`, `_`, `.`.
    static func isNameByte(_ byte: UInt8) -> Bool {
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
    static func isRequestPath(_ text: String) -> Bool {
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
    mutating func milliseconds(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = try milliseconds(key, minimum: 0) else { return nil }
        guard range.contains(value) else {
            throw error(key, "must be between \(Self.formatMilliseconds(range.lowerBound)) and \(Self.formatMilliseconds(range.upperBound)), got \(Self.formatMilliseconds(value))")
        }
        return value
    }

    /// `0`, `250ms`, `30s`, `5m`, `24h`: the largest unit that divides the value.
    static func formatMilliseconds(_ value: Int) -> String {
        if value == 0 { return "0" }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] where value % size == 0 { return "\(value / size)\(unit)" }
        return "\(value)ms"
    }

    /// A host name or address to listen on or match: non-empty visible ASCII without `/`, `@` or spaces.
    mutating func hostString(_ key: String) throws -> String? {
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
