import GatehouseConfiguration
import GatehouseObservability
import GatehousePolicies
import GatehouseRedis
import GatehouseTokens
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Turns a validated configuration into the immutable tables the data path reads. Target health survives a
/// reload for clusters that keep their name; the token validator (and its cache) survives one that keeps the
/// `authorization_server` section as it was.
public final class GatewayCompiler: Sendable {
    private let health = NIOLockedValueBox([String: TargetHealth]())
    private let validator = NIOLockedValueBox<TokenValidator?>(nil)
    /// The Redis client of the `redis:` section, kept across reloads that leave the section as it was.
    private let redis = NIOLockedValueBox<(settings: GatewayConfiguration.Redis, client: RedisClient)?>(nil)
    /// Fault-tolerance state by what it belongs to: a reload keeps a limiter (its counts), a breaker (its window and
    /// state) and an admission queue (its slots and waiters) whose definition did not change, and starts afresh
    /// those whose definition did.
    private let faultTolerance = NIOLockedValueBox(FaultToleranceRegistry())

    struct FaultToleranceRegistry {
        /// By route name and limit name.
        var limits: [String: CompiledRateLimit] = [:]
        /// By route name.
        var breakers: [String: RouteCircuitBreaker] = [:]
        /// By cluster name.
        var admissions: [String: ClusterAdmission] = [:]
    }
    /// `Via` value: protocol version and a pseudonym (RFC 9110 §7.6.3).
    public let via: String
    let logger: Logger
    /// Metric label values of every configuration this compiler made (indices stay stable across reloads).
    public let metricLabels = MetricLabels()
    /// Where sampled spans go (the OTLP exporter the executable runs), and the `OTEL_TRACES_SAMPLER` override of
    /// `tracing.sample_ratio`: both fixed for the process.
    let spanSink: (any SpanSink)?
    let samplerOverride: TraceSampler?
    /// Tests: answers the token validator's cache misses in place of the authorization server.
    let tokenMissResolver: TokenValidator.MissResolver?

    public init(
        via: String = "1.1 gatehouse", logger: Logger = Logger(label: "gatehouse.gateway", factory: { _ in SwiftLogNoOpLogHandler() }),
        spanSink: (any SpanSink)? = nil, sampler: TraceSampler? = nil
    ) {
        self.via = via
        self.logger = logger
        self.spanSink = spanSink
        self.samplerOverride = sampler
        self.tokenMissResolver = nil
    }

    /// A compiler whose token validators ask `tokenMissResolver` instead of the authorization server (tests).
    init(tokenMissResolver: @escaping TokenValidator.MissResolver) {
        self.via = "1.1 gatehouse"
        self.logger = Logger(label: "gatehouse.gateway", factory: { _ in SwiftLogNoOpLogHandler() })
        self.spanSink = nil
        self.samplerOverride = nil
        self.tokenMissResolver = tokenMissResolver
    }

    /// The tracing settings a configuration compiles to.
    func tracing(_ configuration: GatewayConfiguration) -> GatewayTracing {
        GatewayTracing(configuration: configuration.tracing, sampler: samplerOverride, sink: spanSink)
    }

    /// The validator for `settings`: the current one when they did not change, else a new one (started; the old
    /// one stopped).
    private func tokenValidator(for settings: GatewayConfiguration.AuthorizationServer?) -> TokenValidator? {
        validator.withLockedValue { current in
            if let current, current.settings == settings { return current }
            current?.stop()
            let tracer = GatehouseTracer(sampler: samplerOverride ?? .parentBasedRatio(1), sink: spanSink)
            current = settings.map { TokenValidator(settings: $0, logger: logger, tracer: tracer, missResolver: tokenMissResolver) }
            current?.start()
            return current
        }
    }

    /// The client for `settings`: the current one when they did not change, else a new one (the old one shut down).
    /// Its connections live on the gateway's own event loops: each loop opens `pool_size` of them at its first
    /// cluster-limit decision and sends its decisions there, so a decision crosses no thread (the loops are made
    /// when the server runs, after the first compile, hence not ahead). The shared loops given here serve only
    /// callers on no event loop.
    private func sharedRedisClient(for settings: GatewayConfiguration.Redis?) -> RedisClient? {
        redis.withLockedValue { current in
            if let current, current.settings == settings { return current.client }
            if let old = current?.client { _ = old.shutdown() }
            current = nil
            guard let settings else { return nil }
            let client = RedisClient(
                configuration: RedisConfiguration(
                    host: settings.host, port: settings.port, username: settings.username, password: settings.password, database: settings.database,
                    poolSize: settings.poolSize, commandTimeout: .milliseconds(Int64(settings.timeoutMilliseconds)),
                    // A connect that takes longer than a command may is an outage too: fall back rather than wait.
                    connectTimeout: .milliseconds(Int64(max(settings.timeoutMilliseconds, 100))), resp3: settings.protocolVersion == 3
                ),
                eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger
            )
            current = (settings, client)
            return client
        }
    }

    public func compile(_ configuration: GatewayConfiguration) -> CompiledGateway {
        let tokenValidator = tokenValidator(for: configuration.authorizationServer)
        let redisClient = sharedRedisClient(for: configuration.redis)
        let forwardHeader = configuration.authorizationServer?.forwardHeader ?? "Authorization"

        let previous = faultTolerance.withLockedValue { $0 }
        var registry = FaultToleranceRegistry()
        var clusters: [String: CompiledCluster] = [:]
        for cluster in configuration.clusters {
            var admission: ClusterAdmission?
            if let definition = cluster.admission {
                if let kept = previous.admissions[cluster.name], kept.definition == definition {
                    admission = kept
                } else {
                    admission = ClusterAdmission(clusterName: cluster.name, definition: definition)
                }
                registry.admissions[cluster.name] = admission
            }
            let detection = cluster.outlierDetection
            let health = self.health.withLockedValue { registry in
                if let existing = registry[cluster.name] { return existing }
                let created = TargetHealth(consecutiveFailuresToEject: detection.consecutiveFailures, ejectionTime: .milliseconds(Int64(detection.ejectionTimeMilliseconds)))
                registry[cluster.name] = created
                return created
            }
            clusters[cluster.name] = CompiledCluster(
                name: cluster.name,
                targets: cluster.targets.map { TargetKey(host: $0.host, port: $0.port) },
                loadBalancing: cluster.loadBalancing == .roundRobin ? .roundRobin : .leastRequest,
                poolLimits: .init(
                    maxConnections: cluster.pool.maxConnections, maxIdle: cluster.pool.maxIdle,
                    idleTimeout: .milliseconds(Int64(cluster.pool.idleTimeoutMilliseconds)),
                    connectTimeout: .milliseconds(Int64(cluster.connectTimeoutMilliseconds)), maxPending: cluster.pool.maxPending
                ),
                retryAttempts: cluster.retries.attempts,
                health: health,
                healthCheck: cluster.healthCheck.map {
                    HealthCheckSettings(
                        path: $0.path, interval: .milliseconds(Int64($0.intervalMilliseconds)), timeout: .milliseconds(Int64($0.timeoutMilliseconds)),
                        healthyThreshold: $0.healthyThreshold, unhealthyThreshold: $0.unhealthyThreshold
                    )
                },
                admission: admission,
                labels: metricLabels
            )
        }
        var entries: [(match: RouteMatch, route: CompiledRoute)] = []
        for route in configuration.routes {
            guard let cluster = clusters[route.cluster] else { continue }  // validation guarantees it exists
            var replacement: String?
            if let rewrite = route.rewritePrefix {
                replacement = rewrite
            } else if route.stripPrefix {
                replacement = ""
            }
            var auth: RouteAuthorization?
            if let settings = route.auth, settings.mode.requiresToken, let tokenValidator {  // validation requires the validator
                auth = RouteAuthorization(
                    mode: settings.mode, scopes: ScopeRequirement(allOf: Set(settings.scopesAllOf), anyOf: Set(settings.scopesAnyOf)),
                    audiences: Set(settings.audiences), issuers: Set(settings.issuers), realm: settings.realm, validator: tokenValidator,
                    forwardHeader: forwardHeader
                )
            }
            var faults = CompiledRoute.FaultTolerance(priority: PriorityClass(route.priority))
            if !route.priorityOverrides.isEmpty {
                faults.priorityOverrides = PriorityOverrides(
                    overrides: route.priorityOverrides.map { .init(clientIDs: Set($0.clientIDs), scopesAnyOf: Set($0.scopesAnyOf), priority: PriorityClass($0.priority)) }
                )
            }
            if !route.rateLimits.isEmpty {
                faults.rateLimits = RouteRateLimits(
                    route.rateLimits.map { definition in
                        let key = route.name + "\u{0}" + definition.name
                        let limit =
                            previous.limits[key].flatMap { kept in
                                // A cluster limit is kept only with the same Redis client (a changed redis: section
                                // makes a new one).
                                kept.definition == definition && (kept.cluster == nil || kept.cluster?.redis === redisClient) ? kept : nil
                            }
                            ?? compileLimit(definition, route: route.name, redis: redisClient)
                        registry.limits[key] = limit
                        return limit
                    }
                )
            }
            if let definition = route.circuitBreaker {
                let breaker =
                    previous.breakers[route.name].flatMap { $0.definition == definition ? $0 : nil }
                    ?? RouteCircuitBreaker(routeName: route.name, definition: definition, breaker: SharedCircuitBreaker(settings: RouteCircuitBreaker.settings(definition)))
                registry.breakers[route.name] = breaker
                faults.breaker = breaker
            }
            let compiled = CompiledRoute(
                name: route.name, cluster: cluster, prefixReplacement: replacement,
                perTryTimeout: .milliseconds(Int64(route.timeouts.perTryMilliseconds)),
                totalTimeout: .milliseconds(Int64(route.timeouts.totalMilliseconds)),
                maxBodyBytes: route.maxBodyBytes, auth: auth,
                forwardHeader: HeaderHygiene.equalsIgnoringCase(forwardHeader, "authorization") ? nil : forwardHeader,
                upgrades: route.upgrades, tunnelIdleTimeout: .milliseconds(Int64(route.timeouts.tunnelIdleMilliseconds)),
                faultTolerance: faults,
                metricsIndex: metricLabels.route(route.name)
            )
            let match = RouteMatch(
                host: route.match.host, pathPrefix: route.match.pathPrefix, exactPath: route.match.path,
                methods: route.match.methods.isEmpty ? nil : Set(route.match.methods)
            )
            entries.append((match, compiled))
        }
        faultTolerance.withLockedValue { $0 = registry }
        return CompiledGateway(
            routes: RouteTable(entries),
            clusters: configuration.clusters.compactMap { clusters[$0.name] },
            maxHeaderBytes: configuration.limits.maxHeaderBytes,
            maxHeaderCount: configuration.limits.maxHeaderCount,
            headerReadTimeout: .milliseconds(Int64(configuration.limits.headerReadTimeoutMilliseconds)),
            idleTimeout: .milliseconds(Int64(configuration.limits.idleTimeoutMilliseconds)),
            trustedProxies: configuration.trustedProxies,
            via: via,
            tokenValidator: tokenValidator,
            forwardHeader: forwardHeader.lowercased() == "authorization" ? nil : forwardHeader,
            headerFilter: UntrustedHeaderFilter(configuration.requestHygiene, forwardHeaders: [forwardHeader]),
            pathParameters: configuration.requestHygiene.pathParameters == .reject ? .reject : .normalize,
            routeList: entries.map(\.route),
            metricLabels: metricLabels,
            tracing: tracing(configuration)
        )
    }

    /// A new limit: local, or — `scope: cluster`, validation guarantees a `redis:` section — decided by Redis.
    private func compileLimit(_ definition: GatewayConfiguration.RateLimit, route: String, redis: RedisClient?) -> CompiledRateLimit {
        let rule = CompiledRateLimit.rule(definition)
        let cluster = definition.scope == .cluster ? redis.map { ClusterRateLimit(route: route, definition: definition, rule: rule, redis: $0, logger: logger) } : nil
        // A cluster limit's own `limiter` never decides (its fallback has the share); a one-key table keeps it small.
        return CompiledRateLimit(definition, limiter: RateLimiter(rule: rule, maxKeys: cluster == nil ? 100_000 : 1), cluster: cluster)
    }

    /// The server settings (listeners, threads, hard limits) of a configuration.
    public static func settings(_ configuration: GatewayConfiguration, defaultThreads: Int) -> GatewayServer.Settings {
        GatewayServer.Settings(
            listeners: configuration.listeners.map { listener in
                .init(host: listener.host, port: listener.port, tls: listener.tls.map { .init(certificateFile: $0.certificateFile, privateKeyFile: $0.privateKeyFile, http2: $0.http2) })
            },
            eventLoopThreads: configuration.eventLoopThreads ?? defaultThreads,
            // The decoder's own caps sit above the configured limits so that the configured ones answer 431
            // with a body; past the caps the decoder refuses the request itself.
            maxHeaderBytesHardLimit: max(configuration.limits.maxHeaderBytes * 2, 16 * 1024),
            maxHeaderCountHardLimit: max(configuration.limits.maxHeaderCount * 2, 64),
            idleTimeout: .milliseconds(Int64(configuration.limits.idleTimeoutMilliseconds)),
            drainTimeout: .milliseconds(Int64(configuration.limits.drainTimeoutMilliseconds))
        )
    }
}

extension PriorityClass {
    init(_ configured: GatewayConfiguration.PriorityClass) {
        switch configured {
        case .critical: self = .critical
        case .normal: self = .normal
        case .sheddable: self = .sheddable
        }
    }
}
