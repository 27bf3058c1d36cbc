extension GatewayConfiguration {
    /// What the gateway removes or refuses in client requests beyond HTTP's own hop-by-hop rules
    /// (`request_hygiene:`; RFC 9700 §4.13 asks a reverse proxy to sanitise headers a backend may trust).
    public struct RequestHygiene: Sendable, Equatable {
        /// How header names with `_` are treated. Some frameworks (CGI-style environments, Django, PHP, Rack) fold
        /// `X_Forwarded_For` and `X-Forwarded-For` into one variable, so an underscore twin of a header the gateway
        /// sets could override the gateway's value at the backend.
        public enum UnderscoreHeaders: String, Sendable, Equatable, CaseIterable {
            /// Drop a `_` header whose name, with `_` read as `-`, is one the gateway sets or strips (the default).
            case dropLookalikes = "drop_lookalikes"
            /// Drop every header whose name contains `_` (NGINX's `underscores_in_headers off`).
            case drop
            /// Pass them all.
            case keep
        }

        /// `;` parameters inside a path segment (`/public/..;/api`): Tomcat, Jetty and Spring strip them before
        /// resolving dot-segments, so `..;` is `..` to them.
        public enum PathParameters: String, Sendable, Equatable, CaseIterable {
            /// A segment is `.` or `..` when its part before the first `;` is: it is removed as a dot-segment,
            /// parameters included, before routing (the default). Other parameters pass unchanged.
            case normalize
            /// A `;` anywhere in the path is refused with 400 (for backends that never use path parameters).
            case reject
        }

        /// Headers a client could use to make a backend believe something about the request's origin or target;
        /// removed from every request whose peer is not in `trusted_proxies` (trusted proxies' values pass).
        public static let defaultStripFromUntrusted: [String] = [
            "x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip", "cf-connecting-ip", "fastly-client-ip",
            "x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server",
            "x-forwarded-scheme", "x-forwarded-ssl", "x-http-method-override", "x-http-method", "x-method-override",
        ]

        /// Lower-case header names removed from untrusted clients' requests (`strip_from_untrusted`, which replaces
        /// the list). Default `defaultStripFromUntrusted`.
        public var stripFromUntrusted: [String] = RequestHygiene.defaultStripFromUntrusted
        /// Default `drop_lookalikes`.
        public var underscoreHeaders: UnderscoreHeaders = .dropLookalikes
        /// Default `normalize`.
        public var pathParameters: PathParameters = .normalize

        public init() {}
    }

    static func parseRequestHygiene(_ reader: inout YAMLMappingReader) throws -> RequestHygiene {
        var value = RequestHygiene()
        if let names = try reader.stringList("strip_from_untrusted") {
            var list: [String] = []
            for (index, name) in names.enumerated() {
                guard !name.isEmpty, name.utf8.allSatisfy({ isTokenByte($0) }) else {
                    throw reader.itemError("strip_from_untrusted", index, "'\(name)' is not a header name")
                }
                let lowered = name.lowercased()
                if ["host", "content-length", "transfer-encoding", "connection"].contains(lowered) {
                    throw reader.itemError("strip_from_untrusted", index, "'\(name)' is managed by the gateway itself and cannot be listed")
                }
                if !list.contains(lowered) { list.append(lowered) }
            }
            value.stripFromUntrusted = list
        }
        if let text = try reader.string("underscore_headers") {
            guard let mode = RequestHygiene.UnderscoreHeaders(rawValue: text) else {
                throw reader.error("underscore_headers", "expected drop_lookalikes, drop or keep, got '\(text)'")
            }
            value.underscoreHeaders = mode
        }
        if let text = try reader.string("path_parameters") {
            guard let mode = RequestHygiene.PathParameters(rawValue: text) else {
                throw reader.error("path_parameters", "expected normalize or reject, got '\(text)'")
            }
            value.pathParameters = mode
        }
        return value
    }

    /// A route's `upgrades:` list: lower-case protocol tokens; `h2c` is refused (h2c smuggling: a backend that
    /// accepts it would take further requests on the connection past the gateway's checks).
    static func parseUpgrades(_ reader: inout YAMLMappingReader) throws -> [String]? {
        guard let list = try reader.stringList("upgrades") else { return nil }
        var upgrades: [String] = []
        for (index, item) in list.enumerated() {
            let token = item.lowercased()
            guard !token.isEmpty, token.utf8.allSatisfy({ isTokenByte($0) || $0 == UInt8(ascii: "/") }) else {
                throw reader.itemError("upgrades", index, "'\(item)' is not a protocol token such as websocket")
            }
            if token == "h2c" || token.hasPrefix("h2c/") || token == "h2" || token.hasPrefix("http/2") {
                throw reader.itemError("upgrades", index, "'\(item)' cannot be allowed: an HTTP/2 upgrade would let requests bypass the gateway (h2c smuggling)")
            }
            if !upgrades.contains(token) { upgrades.append(token) }
        }
        return upgrades
    }
}
