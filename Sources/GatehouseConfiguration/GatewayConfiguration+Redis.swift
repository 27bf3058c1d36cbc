extension GatewayConfiguration {
    /// The top-level `redis:` section: the server that cluster-wide rate limits share (`GatehouseRedis`'s
    /// `RedisConfiguration` is built from it when the gateway starts).
    public struct Redis: Sendable, Equatable, CustomStringConvertible {
        /// From `url`. Default `127.0.0.1`.
        public var host: String = "127.0.0.1"
        /// From `url`. Default 6379.
        public var port: Int = 6379
        /// ACL user, from `url` (`redis://user@host`). Default nil (the `default` user).
        public var username: String?
        /// `password` (`{env: NAME}`, `{file: PATH}` or inline), or the URL's `user:password@`; `password` wins.
        /// Default nil (no `AUTH`). Never printed: `description` leaves it out.
        public var password: String?
        /// From `url` (`redis://host/2`). Default nil (database 0).
        public var database: Int?
        /// `timeout`: a command without a reply after this long fails and the limiter falls back. Default 50 ms;
        /// 1 ms...10 s.
        public var timeoutMilliseconds: Int = 50
        /// `pool_size`: connections per gateway event loop (each loop sends its decisions on its own connections, so
        /// a process holds `event_loop_threads × pool_size`). Default 1: a loop's commands of one tick leave in one
        /// pipelined write on it; 1...64.
        public var poolSize: Int = 1
        /// `protocol`: 3 asks for RESP3 (`HELLO 3`, RESP2 if the server refuses), 2 stays on RESP2. Default 3.
        public var protocolVersion: Int = 3

        public init() {}

        /// `redis://user@host:port/db`, without the password.
        public var description: String {
            "redis://\(username.map { "\($0)@" } ?? "")\(host):\(port)\(database.map { "/\($0)" } ?? "")"
        }
    }

    static func parseRedis(_ reader: inout YAMLMappingReader, environment: [String: String], baseDirectory: String) throws -> Redis {
        var value = Redis()
        if let url = try reader.string("url") {
            try parseRedisURL(url, into: &value, reader: reader)
        }
        if let password = try reader.secret("password", environment: environment, baseDirectory: baseDirectory) {
            value.password = password
        }
        if let timeout = try reader.milliseconds("timeout", in: 1...10_000) { value.timeoutMilliseconds = timeout }
        if let size = try reader.int("pool_size", range: 1...64) { value.poolSize = size }
        if let version = try reader.int("protocol", range: 2...3) { value.protocolVersion = version }
        return value
    }

    /// `redis://[user[:password]@]host[:port][/db]`. Errors quote the URL with any password replaced by `***`.
    private static func parseRedisURL(_ url: String, into value: inout Redis, reader: YAMLMappingReader) throws {
        var rest = Substring(url)
        guard rest.lowercased().hasPrefix("redis://") else {
            throw reader.error("url", "expected redis://[user[:password]@]host[:port][/db]; rediss:// (TLS) is not supported")
        }
        rest = rest.dropFirst("redis://".count)
        var shown = url
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = userInfo[..<colon]
                let password = userInfo[userInfo.index(after: colon)...]
                shown = "redis://\(user):***@\(rest)"
                guard !password.isEmpty else { throw reader.error("url", "'\(shown)' has an empty password") }
                value.password = String(password)
                value.username = user.isEmpty ? nil : String(user)
            } else {
                value.username = userInfo.isEmpty ? nil : String(userInfo)
            }
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let number = Int(db), (0...1_000_000).contains(number) else {
                    throw reader.error("url", "'\(shown)': the database after / must be a number")
                }
                value.database = number
            }
        }
        var host = rest
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
                throw reader.error("url", "'\(shown)': the port must be between 1 and 65535")
            }
            value.port = port
            host = rest[..<colon]
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "@") }) else {
            throw reader.error("url", "'\(shown)' has no host")
        }
        value.host = String(host)
    }
}
