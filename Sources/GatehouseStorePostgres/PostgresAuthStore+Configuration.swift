import NIOSSL

extension PostgresAuthStore {
    /// Where and how to connect.
    public struct Configuration: Sendable {
        public var host: String
        /// Default 5432.
        public var port: Int
        public var username: String
        /// Nil: trust, peer or a password-less method.
        public var password: String?
        public var database: String
        /// Connections in the pool. Default 16.
        public var poolSize: Int
        /// `statement_timeout` of every connection, in milliseconds: no statement holds locks longer. Default 2000.
        public var statementTimeoutMilliseconds: Int
        /// Bound on establishing a connection, in milliseconds. Default 2000.
        public var connectTimeoutMilliseconds: Int
        /// TLS to the server: nil (default) connects in plain text (loopback, a private network); otherwise the
        /// server's certificate is verified with this configuration.
        public var tls: TLSConfiguration?
        /// Rows one purge statement deletes at most; a purge runs batches until none is left, each its own short
        /// transaction, so it never holds many row locks or blocks writers for long. Default 1000.
        public var purgeBatchSize: Int

        public init(
            host: String, port: Int = 5432, username: String, password: String? = nil, database: String, poolSize: Int = 16,
            statementTimeoutMilliseconds: Int = 2000, connectTimeoutMilliseconds: Int = 2000, tls: TLSConfiguration? = nil,
            purgeBatchSize: Int = 1000
        ) {
            self.purgeBatchSize = purgeBatchSize
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.database = database
            self.poolSize = poolSize
            self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
            self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
            self.tls = tls
        }

        /// How long one store call may take in all: waiting for a connection (the server restarting, the pool
        /// busy) plus the statement. Past it the call fails with `.unavailable` instead of hanging.
        var callDeadline: Duration { .milliseconds(connectTimeoutMilliseconds + statementTimeoutMilliseconds) }
    }
}
