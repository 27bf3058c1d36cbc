import GatehouseConfiguration
import GatehousePolicies
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A route, compiled from configuration for the data path.
///
/// A class (immutable): every exchange holds its route, and one reference is cheaper to hold than a struct's fields.
public final class CompiledRoute: Sendable {
    public let name: String
    public let cluster: CompiledCluster
    /// Replace the matched prefix with this (nil: keep the path; "" with strip: remove the prefix).
    public let prefixReplacement: String?
    public let perTryTimeout: TimeAmount
    public let totalTimeout: TimeAmount
    public let maxBodyBytes: Int
    /// 413 for a body over `maxBodyBytes`, built with the route (`GatewayReply`).
    let bodyTooLarge: GatewayReply
    /// The token policy; nil when the route takes requests without a token.
    public let auth: RouteAuthorization?
    /// Lower-case names of client headers never forwarded on this route: the client's `Authorization` on a
    /// token-checked route, and the gateway's own JWT header (a client must not be able to send its own).
    public let strippedRequestHeaders: [String]
    /// Lower-case `Upgrade` protocols a client may ask for on this route (`websocket` by default; never `h2c`).
    public let upgrades: [String]
    /// A tunnel after `101 Switching Protocols` closes after this long without a byte either way.
    public let tunnelIdleTimeout: TimeAmount
    /// The route's policies, in the order they run: the token check, priority overrides, rate limits, the
    /// cluster's admission, the circuit breaker (each when configured).
    let policies: PolicyChain
    /// The route's priority class before overrides (`priority`, default normal).
    let priority: PriorityClass
    /// Told of every try's result (nil without `circuit_breaker`).
    let breaker: RouteCircuitBreaker?
    let rateLimits: RouteRateLimits?
    /// The route's index in the metrics' label tables (`MetricLabels.route`); 0 (`-`) when compiled without them.
    public let metricsIndex: Int

    init(
        name: String, cluster: CompiledCluster, prefixReplacement: String?, perTryTimeout: TimeAmount, totalTimeout: TimeAmount,
        maxBodyBytes: Int, auth: RouteAuthorization?, forwardHeader: String?, upgrades: [String] = ["websocket"],
        tunnelIdleTimeout: TimeAmount = .minutes(10), faultTolerance: FaultTolerance = .init(), metricsIndex: Int = 0
    ) {
        self.metricsIndex = metricsIndex
        self.name = name
        self.cluster = cluster
        self.prefixReplacement = prefixReplacement
        self.perTryTimeout = perTryTimeout
        self.totalTimeout = totalTimeout
        self.maxBodyBytes = maxBodyBytes
        self.bodyTooLarge = .refused(.payloadTooLarge, "the request body exceeds \(maxBodyBytes) bytes")
        self.auth = auth
        var stripped: [String] = []
        if let auth {
            stripped.append("authorization")
            if !auth.forwardsBearer { stripped.append(auth.forwardHeader.lowercased()) }
        } else if let forwardHeader {
            stripped.append(forwardHeader.lowercased())
        }
        self.strippedRequestHeaders = stripped
        self.upgrades = upgrades
        self.tunnelIdleTimeout = tunnelIdleTimeout
        self.priority = faultTolerance.priority
        self.breaker = faultTolerance.breaker
        self.rateLimits = faultTolerance.rateLimits
        var policies: [RoutePolicy] = []
        if let auth { policies.append(.bearer(auth)) }
        if let overrides = faultTolerance.priorityOverrides, auth != nil { policies.append(.priority(overrides)) }
        if let limits = faultTolerance.rateLimits { policies.append(.rateLimit(limits)) }
        if let admission = cluster.admission { policies.append(.admission(admission)) }
        if let breaker = faultTolerance.breaker { policies.append(.circuitBreaker(breaker)) }
        self.policies = PolicyChain(policies: policies)
    }

    /// A route's fault-tolerance settings, compiled (state kept across reloads by the compiler).
    struct FaultTolerance {
        var priority: PriorityClass = .normal
        var priorityOverrides: PriorityOverrides?
        var rateLimits: RouteRateLimits?
        var breaker: RouteCircuitBreaker?
    }

    /// Whether every protocol an `Upgrade` value lists (`websocket`, `h2c, websocket`, `foo/2`) is allowed here.
    func allowsUpgrade(_ value: String) -> Bool {
        var any = false
        for token in value.split(separator: ",") {
            let name = token.trimmingSpaces.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
            guard upgrades.contains(where: { HeaderHygiene.equalsIgnoringCase(name, lowercased: $0) }) else { return false }
            any = true
        }
        return any
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var slice = self
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return slice
    }
}

/// An upstream cluster, compiled.
public final class CompiledCluster: Sendable {
    public enum LoadBalancing: Sendable { case roundRobin, leastRequest }

    public let name: String
    public let targets: [TargetKey]
    public let loadBalancing: LoadBalancing
    let poolLimits: UpstreamPool.LimitsSendable
    public let retryAttempts: Int
    /// Passive and active health, shared by every event loop.
    public let health: TargetHealth
    /// Active checks, when configured.
    public let healthCheck: HealthCheckSettings?
    /// Bounded concurrency with a priority queue (`admission`), when configured.
    let admission: ClusterAdmission?
    /// The cluster's index in the metrics' label tables, and each target's (cluster, target) index.
    let metricsIndex: Int
    let targetMetricIndices: [TargetKey: Int]

    init(
        name: String, targets: [TargetKey], loadBalancing: LoadBalancing, poolLimits: UpstreamPool.LimitsSendable, retryAttempts: Int, health: TargetHealth,
        healthCheck: HealthCheckSettings?, admission: ClusterAdmission? = nil, labels: MetricLabels? = nil
    ) {
        self.metricsIndex = labels?.cluster(name) ?? 0
        self.targetMetricIndices = Dictionary(targets.map { ($0, labels?.target(cluster: name, target: "\($0.host):\($0.port)") ?? 0) }, uniquingKeysWith: { first, _ in first })
        self.healthCheck = healthCheck
        self.admission = admission
        self.name = name
        self.targets = targets
        self.loadBalancing = loadBalancing
        self.poolLimits = poolLimits
        self.retryAttempts = retryAttempts
        self.health = health
    }
}

extension UpstreamPool {
    /// `Limits` as a Sendable value for configuration.
    struct LimitsSendable: Sendable {
        var maxConnections: Int
        var maxIdle: Int
        var idleTimeout: TimeAmount
        var connectTimeout: TimeAmount
        var maxPending: Int = 4096

        var limits: Limits {
            Limits(maxConnections: maxConnections, maxIdle: maxIdle, idleTimeout: idleTimeout, connectTimeout: connectTimeout, maxPending: maxPending)
        }
    }
}

/// Health of a cluster's targets: active checks mark them up or down; passive outlier detection ejects a target
/// after consecutive failures for a while. Read on every request, written rarely.
public final class TargetHealth: Sendable {
    struct State {
        var down: Set<TargetKey> = []
        var ejectedUntil: [TargetKey: NIODeadline] = [:]
        var consecutiveFailures: [TargetKey: Int] = [:]
    }

    private let state = NIOLockedValueBox(State())
    /// Entries in `state` (down, ejected or failing targets), kept under the lock: while it is zero, which is the
    /// normal case, the per-request reads need not take the lock.
    private let entries = Atomic<Int>(0)
    let consecutiveFailuresToEject: Int
    let ejectionTime: TimeAmount

    public init(consecutiveFailuresToEject: Int, ejectionTime: TimeAmount) {
        self.consecutiveFailuresToEject = consecutiveFailuresToEject
        self.ejectionTime = ejectionTime
    }

    /// Targets that may take traffic now.
    func isAvailable(_ target: TargetKey, now: NIODeadline) -> Bool {
        if entries.load(ordering: .acquiring) == 0 { return true }
        return update { state in
            if state.down.contains(target) { return false }
            if let until = state.ejectedUntil[target] {
                if until > now { return false }
                state.ejectedUntil[target] = nil
            }
            return true
        }
    }

    func recordSuccess(_ target: TargetKey) {
        if entries.load(ordering: .acquiring) == 0 { return }
        update { state in
            if state.consecutiveFailures[target] != nil { state.consecutiveFailures[target] = nil }
        }
    }

    /// Changes the state under the lock and republishes its entry count.
    @discardableResult
    private func update<Result>(_ body: (inout State) -> Result) -> Result {
        state.withLockedValue { state in
            let result = body(&state)
            entries.store(state.down.count + state.ejectedUntil.count + state.consecutiveFailures.count, ordering: .releasing)
            return result
        }
    }

    /// Counts a failure; ejects the target after enough in a row.
    func recordFailure(_ target: TargetKey, now: NIODeadline) {
        update { state in
            guard consecutiveFailuresToEject > 0 else { return }  // 0 turns ejection off
            let failures = state.consecutiveFailures[target, default: 0] + 1
            state.consecutiveFailures[target] = failures
            if failures >= consecutiveFailuresToEject {
                state.ejectedUntil[target] = now + ejectionTime
                state.consecutiveFailures[target] = 0
            }
        }
    }

    /// Active health check result.
    public func setDown(_ target: TargetKey, _ down: Bool) {
        update { state in
            if down { state.down.insert(target) } else { state.down.remove(target) }
        }
    }

    public func isDown(_ target: TargetKey) -> Bool {
        state.withLockedValue { $0.down.contains(target) }
    }
}

/// Everything the data path needs from configuration, immutable; a reload builds a new one and swaps it in.
/// (A class: each connection holds the current one, and one reference is cheaper to copy than the fields.)
public final class CompiledGateway: Sendable {
    public let routes: RouteTable<CompiledRoute>
    /// Every route, in configuration order (the admin listener's `/rate-limits` and `/breakers`).
    public let routeList: [CompiledRoute]
    public let clusters: [CompiledCluster]
    /// The clusters' admission queues (their waiters' timeouts are enforced by every loop's ticker).
    let admissions: [ClusterAdmission]
    public let maxHeaderBytes: Int
    public let maxHeaderCount: Int
    /// The 431s for a head over `maxHeaderCount` fields or `maxHeaderBytes`, built with the configuration.
    let tooManyHeaderFields: GatewayReply
    let headerBlockTooLarge: GatewayReply
    public let headerReadTimeout: TimeAmount
    public let idleTimeout: TimeAmount
    /// Peers whose forwarding headers are kept and appended to. The configuration's own `CIDR` type: one
    /// containment check for validation and the data path (a copy here once ignored IPv4-mapped peers).
    public let trustedProxies: [GatewayConfiguration.CIDR]
    public let via: String
    /// Checks tokens for the routes that need them (nil without an `authorization_server` section).
    public let tokenValidator: TokenValidator?
    /// A custom header that carries the JWT upstream: removed from every request, so that no client can send its
    /// own to a route without auth. Nil when the JWT goes in `Authorization`.
    public let forwardHeader: String?

    /// Client headers dropped beyond the hop-by-hop set (`request_hygiene:`).
    public let headerFilter: UntrustedHeaderFilter
    /// `;` path parameters (`request_hygiene.path_parameters`).
    public let pathParameters: PathNormalizer.ParameterHandling
    /// The label tables the routes' and clusters' metric indices refer to (the compiler's, kept across reloads).
    public let metricLabels: MetricLabels
    /// Trace context and span export (`tracing:`).
    public let tracing: GatewayTracing

    public init(
        routes: RouteTable<CompiledRoute>, clusters: [CompiledCluster], maxHeaderBytes: Int, maxHeaderCount: Int, headerReadTimeout: TimeAmount,
        idleTimeout: TimeAmount, trustedProxies: [GatewayConfiguration.CIDR], via: String, tokenValidator: TokenValidator?, forwardHeader: String?,
        headerFilter: UntrustedHeaderFilter = .standard, pathParameters: PathNormalizer.ParameterHandling = .normalize, routeList: [CompiledRoute] = [],
        metricLabels: MetricLabels = MetricLabels(),
        tracing: GatewayTracing = .standard
    ) {
        self.tracing = tracing
        self.routeList = routeList
        self.admissions = clusters.compactMap(\.admission)
        self.metricLabels = metricLabels
        self.headerFilter = headerFilter
        self.pathParameters = pathParameters
        self.routes = routes
        self.clusters = clusters
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.tooManyHeaderFields = .refused(.requestHeaderFieldsTooLarge, "more than \(maxHeaderCount) header fields")
        self.headerBlockTooLarge = .refused(.requestHeaderFieldsTooLarge, "the header block exceeds \(maxHeaderBytes) bytes")
        self.headerReadTimeout = headerReadTimeout
        self.idleTimeout = idleTimeout
        self.trustedProxies = trustedProxies
        self.via = via
        self.tokenValidator = tokenValidator
        self.forwardHeader = forwardHeader
    }

    public func isTrusted(_ address: [UInt8]?) -> Bool {
        guard let address, !trustedProxies.isEmpty else { return false }
        return trustedProxies.contains { $0.contains(address) }
    }
}

/// The current compiled configuration, swapped atomically on reload; each exchange keeps the snapshot it
/// started with.
public final class GatewayRuntime: Sendable {
    private let current: NIOLockedValueBox<CompiledGateway>

    public init(_ gateway: CompiledGateway) {
        self.current = NIOLockedValueBox(gateway)
    }

    public var snapshot: CompiledGateway { current.withLockedValue { $0 } }

    public func replace(_ gateway: CompiledGateway) {
        current.withLockedValue { $0 = gateway }
    }
}
