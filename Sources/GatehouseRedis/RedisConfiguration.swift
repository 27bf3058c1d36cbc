import NIOCore

/// How a `RedisClient` reaches its server and how patient it is. Every field has a documented default.
///
/// The gateway builds it from the YAML's top-level `redis:` section (`GatewayConfiguration.Redis`).
public struct RedisConfiguration: Sendable {
    /// Default `127.0.0.1`.
    public var host: String
    /// Default `6379`.
    public var port: Int
    /// ACL user for `AUTH user password`; nil sends `AUTH password` (the `default` user). Default nil.
    public var username: String?
    /// No `AUTH` when nil (the default). Never logged nor put in an error.
    public var password: String?
    /// `SELECT`ed after connecting when not nil. Default nil (database 0).
    public var database: Int?
    /// Connections per event loop that sends commands (`pool_size`; see `RedisClient`). Default 1.
    public var poolSize: Int
    /// A command without its reply after this long fails with `.timeout` and its connection is replaced
    /// (`timeout`). Default 50 ms: a rate-limit decision that waits longer costs more than falling back.
    public var commandTimeout: TimeAmount
    /// Time allowed to open a connection and finish its handshake (`AUTH`, `HELLO`, `SELECT`). Default 1 s.
    public var connectTimeout: TimeAmount
    /// Ask for RESP3 with `HELLO 3`; a server that refuses (Redis < 6) is spoken to in RESP2. Default true.
    public var resp3: Bool
    /// First wait before reconnecting a slot whose connection failed; doubles per failure. Default 50 ms.
    public var reconnectBackoffInitial: TimeAmount
    /// Longest wait between reconnect attempts. Default 2 s.
    public var reconnectBackoffMaximum: TimeAmount

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        username: String? = nil,
        password: String? = nil,
        database: Int? = nil,
        poolSize: Int = 1,
        commandTimeout: TimeAmount = .milliseconds(50),
        connectTimeout: TimeAmount = .seconds(1),
        resp3: Bool = true,
        reconnectBackoffInitial: TimeAmount = .milliseconds(50),
        reconnectBackoffMaximum: TimeAmount = .seconds(2)
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.poolSize = max(1, poolSize)
        self.commandTimeout = commandTimeout
        self.connectTimeout = connectTimeout
        self.resp3 = resp3
        self.reconnectBackoffInitial = reconnectBackoffInitial
        self.reconnectBackoffMaximum = reconnectBackoffMaximum
    }
}

extension RedisConfiguration: CustomStringConvertible {
    /// `redis://user@host:port/db`: the password is never part of it.
    public var description: String {
        "redis://\(username.map { "\($0)@" } ?? "")\(host):\(port)\(database.map { "/\($0)" } ?? "")"
    }
}
