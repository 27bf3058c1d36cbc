extension AuthServerConfiguration {
    /// How SQLite commits.
    public enum Synchronous: String, Sendable, Equatable {
        /// fsync on every commit: survives power loss as well as process crashes.
        case full
        /// fsync at checkpoints only (WAL): survives process crashes (`kill -9`), may lose the last commits on power loss.
        case normal
    }

    /// Where the authorization server keeps its state: the embedded SQLite file (default), or a PostgreSQL
    /// database that several servers share (`storage: {postgres: {...}}`). Exactly one of the two.
    public struct Storage: Sendable, Equatable {
        /// Database file, relative to the data directory. Default `auth.sqlite`.
        public var sqliteFile: String = "auth.sqlite"
        /// Default `.full`.
        public var synchronous: Synchronous = .full
        /// When set, the PostgreSQL store is used and the SQLite settings are ignored. Default nil.
        public var postgres: Postgres?

        public init(sqliteFile: String = "auth.sqlite", synchronous: Synchronous = .full, postgres: Postgres? = nil) {
            self.sqliteFile = sqliteFile
            self.synchronous = synchronous
            self.postgres = postgres
        }
    }

    /// The PostgreSQL store's connection: `storage.postgres` with `url`, `password`, `pool_size` and
    /// `statement_timeout`. The password never appears in this type's description.
    public struct Postgres: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
        public var host: String
        /// Default 5432.
        public var port: Int
        public var username: String
        public var database: String
        /// From `password: {env: NAME}` or `{file: PATH}`; nil when the server needs none (trust, peer).
        public var password: String?
        /// Connections per server process. Default 16.
        public var poolSize: Int
        /// Longest a statement may run (and hold its locks), in milliseconds; a call also waits at most this
        /// long plus the connect timeout for a connection. Default 2000 (`2s`).
        public var statementTimeoutMilliseconds: Int
        /// `?sslmode=require` in the URL: TLS with the server's certificate verified against the system trust
        /// store. Default false (`sslmode=disable`: loopback or a private network).
        public var requireTLS: Bool

        public init(host: String, port: Int = 5432, username: String, database: String, password: String? = nil, poolSize: Int = 16, statementTimeoutMilliseconds: Int = 2000, requireTLS: Bool = false) {
            self.host = host
            self.port = port
            self.username = username
            self.database = database
            self.password = password
            self.poolSize = poolSize
            self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
            self.requireTLS = requireTLS
        }

        /// The URL without the password (for logs).
        public var redactedURL: String {
            "postgres://\(username)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)\(requireTLS ? "?sslmode=require" : "")"
        }

        public var description: String {
            "Postgres(url: \(redactedURL), password: \(password == nil ? "none" : "<redacted>"), poolSize: \(poolSize), statementTimeout: \(statementTimeoutMilliseconds)ms)"
        }

        public var debugDescription: String { description }

        /// Parses `postgres://user@host:port/database[?sslmode=disable|require]` (also `postgresql://`).
        /// A password in the URL is refused: it belongs in `password: {env: NAME}` or `{file: PATH}`, out of the
        /// file. Returns the reason on failure (without echoing the URL, which may hold a password).
        static func parse(url text: String) -> Result<Postgres, URLError> {
            let schemes = ["postgres://", "postgresql://"]
            guard let scheme = schemes.first(where: { text.lowercased().hasPrefix($0) }) else {
                return .failure(URLError("must start with postgres:// (postgres://user@host:5432/database)"))
            }
            var rest = Substring(text.dropFirst(scheme.count))
            var requireTLS = false
            if let question = rest.firstIndex(of: "?") {
                for parameter in rest[rest.index(after: question)...].split(separator: "&") {
                    let pair = parameter.split(separator: "=", maxSplits: 1).map(String.init)
                    guard pair.count == 2, pair[0] == "sslmode" else {
                        return .failure(URLError("unknown URL parameter '\(pair[0])' (known: sslmode)"))
                    }
                    switch pair[1] {
                    case "disable": requireTLS = false
                    case "require", "verify-full": requireTLS = true
                    default: return .failure(URLError("sslmode must be disable or require, got '\(pair[1])'"))
                    }
                }
                rest = rest[..<question]
            }
            guard let slash = rest.firstIndex(of: "/") else {
                return .failure(URLError("names no database (postgres://user@host:5432/database)"))
            }
            let database = decode(rest[rest.index(after: slash)...])
            let authority = rest[..<slash]
            guard let database, !database.isEmpty, !database.contains("/") else {
                return .failure(URLError("names no database (postgres://user@host:5432/database)"))
            }
            guard let at = authority.lastIndex(of: "@") else {
                return .failure(URLError("names no user (postgres://user@host:5432/database)"))
            }
            let userInfo = authority[..<at]
            guard !userInfo.contains(":") else {
                return .failure(URLError("must not contain a password; give it as password: {env: NAME} or {file: PATH}"))
            }
            guard let username = decode(userInfo), !username.isEmpty else {
                return .failure(URLError("names no user (postgres://user@host:5432/database)"))
            }
            let hostPort = authority[authority.index(after: at)...]
            var host: Substring
            var port = 5432
            if hostPort.hasPrefix("[") {
                guard let close = hostPort.firstIndex(of: "]") else { return .failure(URLError("has an unclosed [ in its host")) }
                host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
                let after = hostPort[hostPort.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":"), let value = Int(after.dropFirst()), (1...65535).contains(value) else {
                        return .failure(URLError("has an invalid port"))
                    }
                    port = value
                }
            } else if let colon = hostPort.lastIndex(of: ":") {
                host = hostPort[..<colon]
                guard let value = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(value) else {
                    return .failure(URLError("has an invalid port"))
                }
                port = value
            } else {
                host = hostPort
            }
            guard !host.isEmpty, !host.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F }) else {
                return .failure(URLError("names no host (postgres://user@host:5432/database)"))
            }
            return .success(Postgres(host: String(host), port: port, username: username, database: database, requireTLS: requireTLS))
        }

        /// Percent-decoding of a URL part; nil when an escape is malformed.
        static func decode(_ text: Substring) -> String? {
            var bytes: [UInt8] = []
            var iterator = text.utf8.makeIterator()
            while let byte = iterator.next() {
                guard byte == UInt8(ascii: "%") else {
                    bytes.append(byte)
                    continue
                }
                guard let high = iterator.next(), let low = iterator.next(),
                      let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            }
            return String(validating: bytes, as: UTF8.self)
        }

        /// Why a URL was refused.
        struct URLError: Error {
            let reason: String
            init(_ reason: String) { self.reason = reason }
        }
    }
}

extension AuthServerConfiguration.Storage {
    /// Reads `storage`: `{sqlite: {file, synchronous}}` or `{postgres: {url, password, pool_size, statement_timeout}}`.
    static func parse(_ storage: inout YAMLMappingReader, environment: [String: String], baseDirectory: String) throws -> Self {
        var result = Self()
        let hasSQLite = storage.node("sqlite") != nil
        let hasPostgres = storage.node("postgres") != nil
        if hasSQLite && hasPostgres {
            throw storage.error("postgres", "give exactly one of sqlite or postgres")
        }
        var sqlite = try storage.mapping("sqlite")
        if let file = try sqlite.string("file") { result.sqliteFile = file }
        if let mode = try sqlite.string("synchronous") {
            guard let value = AuthServerConfiguration.Synchronous(rawValue: mode) else { throw sqlite.error("synchronous", "expected full or normal, got '\(mode)'") }
            result.synchronous = value
        }
        try sqlite.finish()

        if hasPostgres {
            var postgres = try storage.mapping("postgres")
            let url = try postgres.requiredString("url")
            var parsed: AuthServerConfiguration.Postgres
            switch AuthServerConfiguration.Postgres.parse(url: url) {
            case .success(let value): parsed = value
            case .failure(let error): throw postgres.error("url", error.reason)
            }
            if let node = postgres.node("password"), case .scalar = node {
                throw postgres.error("password", "give it as {env: NAME} or {file: PATH}, not inline in the file")
            }
            parsed.password = try postgres.secret("password", environment: environment, baseDirectory: baseDirectory)
            if let size = try postgres.int("pool_size", range: 1...1000) { parsed.poolSize = size }
            if let timeout = try postgres.milliseconds("statement_timeout", minimum: 1) {
                guard timeout <= 600_000 else { throw postgres.error("statement_timeout", "must be at most 10m") }
                parsed.statementTimeoutMilliseconds = timeout
            }
            try postgres.finish()
            result.postgres = parsed
        }
        try storage.finish()
        return result
    }
}
