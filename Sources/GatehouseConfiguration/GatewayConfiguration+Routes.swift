import Foundation
import GatehouseTokens
import Yams

// Routes (`routes:`): match conditions, prefix rewriting, timeouts, body limits, upgrades, token policy.
extension GatewayConfiguration {
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
        /// The route's priority class (default `normal`), changed per request by the first matching override.
        public var priority: PriorityClass = .normal
        public var priorityOverrides: [PriorityOverride] = []
        /// Every limit must allow a request; none by default.
        public var rateLimits: [RateLimit] = []
        /// None by default.
        public var circuitBreaker: CircuitBreaker?

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

    static func parseAuth(_ reader: inout YAMLMappingReader, authorizationServer: AuthorizationServer?) throws -> Route.Auth {
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

    static func parseRoute(
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
        if let priority = try parsePriority(&reader, "priority") { route.priority = priority }
        route.priorityOverrides = try parsePriorityOverrides(&reader, authenticated: route.auth?.mode.requiresToken == true)
        route.rateLimits = try parseRateLimits(&reader, totalTimeoutMilliseconds: route.timeouts.totalMilliseconds)
        route.circuitBreaker = try parseCircuitBreaker(&reader)
        return route
    }
}
