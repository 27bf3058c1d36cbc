import Foundation
import Yams

// Upstream clusters (`clusters:`): targets, load balancing, pools, health checks, outlier detection, retries.
extension GatewayConfiguration {
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
        /// Bounded concurrency with a priority queue (see `Admission`); none when nil (the default).
        public var admission: Admission?

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

    static func parseCluster(_ reader: inout YAMLMappingReader) throws -> Cluster {
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
        cluster.admission = try parseAdmission(&reader)
        return cluster
    }

    /// `http://host:port`, optionally with a trailing `/`; nothing else for now.
    static func parseTarget(_ text: String, error: (String) -> ConfigurationError) throws -> Cluster.Target {
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
}
