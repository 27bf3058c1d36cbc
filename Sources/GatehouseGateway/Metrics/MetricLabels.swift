import NIOHTTP1
import Synchronization

/// Label values of the gateway's metrics, resolved to array indices when a configuration is compiled, so that the
/// data path counts with an index and never touches a string. The tables only grow: a route that a reload
/// removed keeps its index (and its series, as Prometheus expects of a counter), one that comes back gets it again.
public final class MetricLabels: Sendable {
    struct Tables {
        /// Index 0 is `-`: requests refused before routing.
        var routes: [String] = ["-"]
        var clusters: [String] = []
        /// (cluster, `host:port`).
        var targets: [(cluster: String, target: String)] = []
        /// (route, limit name): the lead's rate limits register here.
        var rateLimits: [(route: String, limit: String)] = []
    }

    private let tables = Mutex(Tables())

    public init() {}

    /// The index of a route's series (registered on first use).
    public func route(_ name: String) -> Int { index(of: name, in: \Tables.routes) }

    public func cluster(_ name: String) -> Int { index(of: name, in: \Tables.clusters) }

    /// The index of a (cluster, target) pair's upstream series.
    public func target(cluster: String, target: String) -> Int {
        tables.withLock { tables in
            if let index = tables.targets.firstIndex(where: { $0.cluster == cluster && $0.target == target }) { return index }
            tables.targets.append((cluster, target))
            return tables.targets.count - 1
        }
    }

    /// The index of a route's named rate limit, for `GatewayLoopMetrics.rateLimited`
    /// (`gatehouse_gateway_rate_limited_total{route, limit}`). Call it when compiling the route's policies.
    public func rateLimit(route: String, limit: String) -> Int {
        tables.withLock { tables in
            if let index = tables.rateLimits.firstIndex(where: { $0.route == route && $0.limit == limit }) { return index }
            tables.rateLimits.append((route, limit))
            return tables.rateLimits.count - 1
        }
    }

    var snapshot: Tables { tables.withLock { $0 } }

    private func index(of name: String, in table: WritableKeyPath<Tables, [String]>) -> Int {
        tables.withLock { tables in
            if let index = tables[keyPath: table].firstIndex(of: name) { return index }
            tables[keyPath: table].append(name)
            return tables[keyPath: table].count - 1
        }
    }
}

/// The `method` label: the standard methods, anything else `other` (a client cannot make new series).
enum MethodLabel: Int, CaseIterable {
    case get, head, post, put, delete, connect, options, trace, patch, other

    init(_ method: HTTPMethod?) {
        switch method {
        case .GET: self = .get
        case .HEAD: self = .head
        case .POST: self = .post
        case .PUT: self = .put
        case .DELETE: self = .delete
        case .CONNECT: self = .connect
        case .OPTIONS: self = .options
        case .TRACE: self = .trace
        case .PATCH: self = .patch
        default: self = .other
        }
    }

    var name: String {
        switch self {
        case .get: "GET"
        case .head: "HEAD"
        case .post: "POST"
        case .put: "PUT"
        case .delete: "DELETE"
        case .connect: "CONNECT"
        case .options: "OPTIONS"
        case .trace: "TRACE"
        case .patch: "PATCH"
        case .other: "other"
        }
    }
}

/// The `outcome` label of `gatehouse_gateway_upstream_requests_total`: how one try ended.
enum UpstreamOutcome: Int, CaseIterable {
    case ok, connectError, reset, timeout, serverError

    var name: String {
        switch self {
        case .ok: "ok"
        case .connectError: "connect_error"
        case .reset: "reset"
        case .timeout: "timeout"
        case .serverError: "5xx"
        }
    }
}
