import GatehouseConfiguration
import Testing

/// A gateway file from its parts; nil leaves the key out.
private func gateway(
    listeners: String? = "[{port: 8080}]",
    clusters: String? = "[{name: backend, targets: ['http://127.0.0.1:18080']}]",
    routes: String? = "[{cluster: backend}]",
    extra: String = ""
) -> String {
    var lines: [String] = []
    if let listeners { lines.append("listeners: \(listeners)") }
    if let clusters { lines.append("clusters: \(clusters)") }
    if let routes { lines.append("routes: \(routes)") }
    if !extra.isEmpty { lines.append(extra) }
    return lines.joined(separator: "\n") + "\n"
}

/// The smallest valid `authorization_server` section.
private let authorizationServer = "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: gw-secret}"

/// An `authorization_server` section: the smallest valid one plus `fields` (`key: value, ...`).
private func authorizationServer(_ fields: String) -> String {
    "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: gw-secret, \(fields)}"
}

/// A gateway file with the smallest valid `authorization_server` section and one route with `auth: {<auth>}`.
private func gatewayWithAuth(_ auth: String) -> String {
    gateway(routes: "[{cluster: backend, auth: {\(auth)}}]", extra: authorizationServer)
}

private typealias Gateway = GatewayConfiguration
private typealias AuthorizationServer = GatewayConfiguration.AuthorizationServer
private typealias Auth = GatewayConfiguration.Route.Auth
private typealias CIDR = GatewayConfiguration.CIDR

private func address(_ text: String) -> [UInt8] {
    CIDR.parseAddress(text) ?? []
}

@Suite struct GatewayConfigurationTests {
    @Test func aPrivateCAFileIsResolvedAgainstTheConfigurationDirectory() throws {
        let yaml = gateway(extra: "authorization_server: {issuer: 'https://auth.example', client_id: gw, client_secret: s, ca_file: hostname}")
        let configuration = try Gateway.parse(yaml: yaml, baseDirectory: "/etc")
        #expect(configuration.authorizationServer?.caFile == "/etc/hostname")
        #expect(try Gateway.parse(yaml: gateway(extra: authorizationServer)).authorizationServer?.caFile == nil)
    }

    @Test func minimalFileGetsTheDocumentedDefaults() throws {
        let configuration = try Gateway.parse(yaml: gateway())
        #expect(configuration.listeners == [Gateway.Listener(host: "127.0.0.1", port: 8080, tls: nil)])
        #expect(configuration.eventLoopThreads == nil)
        #expect(configuration.admin == nil)
        #expect(configuration.trustedProxies.isEmpty)
        #expect(configuration.authorizationServer == nil)

        let limits = configuration.limits
        #expect(limits.maxHeaderBytes == 16384)
        #expect(limits.maxHeaderCount == 100)
        #expect(limits.maxBodyBytes == 10_485_760)
        #expect(limits.headerReadTimeoutMilliseconds == 10_000)
        #expect(limits.idleTimeoutMilliseconds == 60_000)
        #expect(limits.drainTimeoutMilliseconds == 30_000)
        #expect(limits == Gateway.Limits())

        #expect(configuration.clusters.count == 1)
        let cluster = try #require(configuration.clusters.first)
        #expect(cluster.name == "backend")
        #expect(cluster.targets == [Gateway.Cluster.Target(host: "127.0.0.1", port: 18080)])
        #expect(cluster.loadBalancing == .roundRobin)
        #expect(cluster.connectTimeoutMilliseconds == 2000)
        #expect(cluster.pool == Gateway.Cluster.Pool(maxConnections: 1024, maxIdle: 128, idleTimeoutMilliseconds: 60_000))
        #expect(cluster.healthCheck == nil)
        #expect(cluster.outlierDetection == Gateway.Cluster.OutlierDetection(consecutiveFailures: 5, ejectionTimeMilliseconds: 30_000))
        #expect(cluster.retries == Gateway.Cluster.Retries(attempts: 2, budgetPercent: 20, backoffBaseMilliseconds: 25, backoffMaxMilliseconds: 250))
        #expect(cluster == Gateway.Cluster(name: "backend", targets: [.init(host: "127.0.0.1", port: 18080)]))

        #expect(configuration.routes.count == 1)
        let route = try #require(configuration.routes.first)
        #expect(route.name == "route-0")
        #expect(route.cluster == "backend")
        #expect(route.match == Gateway.Route.Match(host: nil, pathPrefix: nil, path: nil, methods: []))
        #expect(route.stripPrefix == false)
        #expect(route.rewritePrefix == nil)
        #expect(route.timeouts == Gateway.Route.Timeouts(perTryMilliseconds: 15_000, totalMilliseconds: 30_000))
        #expect(route.maxBodyBytes == 10_485_760)
        #expect(route.auth == nil)
        #expect(route == Gateway.Route(name: "route-0", cluster: "backend"))
    }

    @Test func everyFieldIsRead() throws {
        let configuration = try Gateway.parse(yaml: """
            listeners:
              - host: 0.0.0.0
                port: 8443
                tls:
                  certificate: certs/dev/server.pem
                  private_key: /etc/keys/server.key
                  http2: false
              - port: 8080
            event_loop_threads: 4
            admin: {port: 9902}
            limits:
              max_header_bytes: 32768
              max_header_count: 50
              max_body_bytes: 1048576
              header_read_timeout: 5s
              idle_timeout: 2m
              drain_timeout: 0
            trusted_proxies: [127.0.0.1/32, 10.0.0.0/8, "::1/128"]
            clusters:
              - name: backend
                targets: [http://127.0.0.1:18080, 'http://[::1]:18081/', http://Backend.Internal:80]
                load_balancing: least_request
                connect_timeout: 500ms
                pool: {max_connections: 64, max_idle: 8, idle_timeout: 30s, max_pending: 100}
                health_check: {path: /healthz, interval: 10s, timeout: 2s, healthy_threshold: 1, unhealthy_threshold: 5}
                outlier_detection: {consecutive_failures: 0, ejection_time: 1m}
                retries: {attempts: 0, budget_percent: 10, backoff_base: 10ms, backoff_max: 1s}
              - name: other
                targets: [http://10.0.0.5:9000]
            routes:
              - name: api
                match: {host: API.example.com, path_prefix: /api, methods: [GET, POST, GET]}
                cluster: backend
                strip_prefix: true
                timeouts: {per_try: 5s, total: 12s}
                max_body_bytes: 0
              - match: {path: /exact}
                cluster: other
              - match: {path_prefix: /old}
                cluster: other
                rewrite_prefix: /v2
                timeouts: {total: 10s}
            """, baseDirectory: "/etc/gatehouse")

        #expect(configuration.listeners == [
            Gateway.Listener(
                host: "0.0.0.0", port: 8443,
                tls: .init(certificateFile: "/etc/gatehouse/certs/dev/server.pem", privateKeyFile: "/etc/keys/server.key", http2: false)
            ),
            Gateway.Listener(host: "127.0.0.1", port: 8080),
        ])
        #expect(configuration.eventLoopThreads == 4)
        #expect(configuration.admin == Gateway.Admin(host: "127.0.0.1", port: 9902))
        #expect(configuration.limits == Gateway.Limits(
            maxHeaderBytes: 32768, maxHeaderCount: 50, maxBodyBytes: 1_048_576,
            headerReadTimeoutMilliseconds: 5000, idleTimeoutMilliseconds: 120_000, drainTimeoutMilliseconds: 0
        ))
        #expect(configuration.trustedProxies.map(\.description) == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"])

        #expect(configuration.clusters == [
            Gateway.Cluster(
                name: "backend",
                targets: [.init(host: "127.0.0.1", port: 18080), .init(host: "::1", port: 18081), .init(host: "backend.internal", port: 80)],
                loadBalancing: .leastRequest,
                connectTimeoutMilliseconds: 500,
                pool: .init(maxConnections: 64, maxIdle: 8, idleTimeoutMilliseconds: 30_000, maxPending: 100),
                healthCheck: .init(path: "/healthz", intervalMilliseconds: 10_000, timeoutMilliseconds: 2000, healthyThreshold: 1, unhealthyThreshold: 5),
                outlierDetection: .init(consecutiveFailures: 0, ejectionTimeMilliseconds: 60_000),
                retries: .init(attempts: 0, budgetPercent: 10, backoffBaseMilliseconds: 10, backoffMaxMilliseconds: 1000)
            ),
            Gateway.Cluster(name: "other", targets: [.init(host: "10.0.0.5", port: 9000)]),
        ])
        #expect(configuration.clusters[0].targets[1].description == "[::1]:18081")

        #expect(configuration.routes == [
            Gateway.Route(
                name: "api",
                match: .init(host: "api.example.com", pathPrefix: "/api", methods: ["GET", "POST"]),
                cluster: "backend",
                stripPrefix: true,
                timeouts: .init(perTryMilliseconds: 5000, totalMilliseconds: 12_000),
                maxBodyBytes: 0
            ),
            Gateway.Route(name: "route-1", match: .init(path: "/exact"), cluster: "other", maxBodyBytes: 1_048_576),
            Gateway.Route(
                name: "route-2",
                match: .init(pathPrefix: "/old"),
                cluster: "other",
                rewritePrefix: "/v2",
                timeouts: .init(perTryMilliseconds: 10_000, totalMilliseconds: 10_000),  // per_try defaults to a shorter total
                maxBodyBytes: 1_048_576
            ),
        ])
    }

    @Test func parsesTheBenchConfiguration() throws {
        let configuration = try Gateway.load(file: "config/bench/gateway.yaml", environment: [:])
        #expect(configuration.listeners == [Gateway.Listener(host: "127.0.0.1", port: 18084)])
        #expect(configuration.eventLoopThreads == 1)
        #expect(configuration.admin == nil)
        #expect(configuration.trustedProxies.isEmpty)
        #expect(configuration.clusters == [Gateway.Cluster(name: "backend", targets: [.init(host: "127.0.0.1", port: 18080)])])
        #expect(configuration.routes.count == 1)
        #expect(configuration.routes.first?.match == Gateway.Route.Match(pathPrefix: "/"))
        #expect(configuration.routes.first?.cluster == "backend")
        #expect(configuration.routes.first?.stripPrefix == false)
        #expect(configuration.routes.first?.rewritePrefix == nil)
        // The plain benchmark measures the proxy path alone: no token validation.
        #expect(configuration.authorizationServer == nil)
        #expect(configuration.routes.first?.auth == nil)
    }

    @Test func parsesTheFullBenchConfiguration() throws {
        let configuration = try Gateway.load(file: "config/bench/gateway-full.yaml", environment: [:])
        let plain = try Gateway.load(file: "config/bench/gateway.yaml", environment: [:])
        // The same proxy settings as the plain benchmark...
        #expect(configuration.listeners == plain.listeners)
        #expect(configuration.eventLoopThreads == 1)
        #expect(configuration.admin == nil)
        #expect(configuration.limits == plain.limits)
        // The same backend; the full configuration adds an active health check (retries and outlier ejection are
        // on in both, at their defaults, spelled out in the full one).
        var clusters = configuration.clusters
        #expect(clusters.first?.healthCheck?.path == "/")
        #expect(clusters.first?.retries.attempts == 2)
        #expect(clusters.first?.outlierDetection.consecutiveFailures == 5)
        clusters[0].healthCheck = nil
        #expect(clusters == plain.clusters)
        #expect(configuration.routes.count == 1)
        let route = try #require(configuration.routes.first)
        let plainRoute = try #require(plain.routes.first)
        #expect(route.match == plainRoute.match)
        #expect(route.cluster == plainRoute.cluster)
        #expect(route.timeouts == .init(perTryMilliseconds: 5000, totalMilliseconds: 15000))
        // ...plus token validation: opaque tokens on the catch-all route, against the demo authorization server.
        #expect(configuration.authorizationServer == AuthorizationServer(
            issuer: "http://127.0.0.1:9000", clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret", exchange: .tokenExchange
        ))
        #expect(route.auth == Auth(mode: .opaque, scopesAllOf: ["orders:read"], issuers: ["http://127.0.0.1:9000"]))
    }

    @Test func parsesTheDemoConfiguration() throws {
        let configuration = try Gateway.load(file: "config/demo/gateway.yaml", environment: [:])
        #expect(configuration.listeners == [Gateway.Listener(host: "127.0.0.1", port: 8080)])
        #expect(configuration.admin == Gateway.Admin(host: "127.0.0.1", port: 9901))
        #expect(configuration.clusters.map(\.name) == ["demo-backend"])
        let cluster = try #require(configuration.clusters.first)
        #expect(cluster.targets == [.init(host: "127.0.0.1", port: 8081)])
        #expect(cluster.healthCheck?.path == "/healthz")
        #expect(configuration.routes.map(\.match.pathPrefix) == ["/public/", "/api/"])
        #expect(configuration.routes.allSatisfy { $0.cluster == "demo-backend" })

        // Token validation against the demo authorization server, as its gateway client (config/demo/auth.yaml).
        let server = try #require(configuration.authorizationServer)
        #expect(server == AuthorizationServer(issuer: "http://127.0.0.1:9000", clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret"))
        #expect(server.metadataURL == "http://127.0.0.1:9000/.well-known/oauth-authorization-server")
        let demoAuth = try AuthServerConfiguration.load(file: "config/demo/auth.yaml", environment: [:])
        #expect(server.issuer == demoAuth.issuer)
        let client = try #require(demoAuth.clients.first { $0.id == server.clientID })
        #expect(client.secret == .plaintext(server.clientSecret))
        #expect(client.grants.contains(.tokenExchange))
        #expect(client.mayIntrospect)

        let routes = configuration.routes
        #expect(routes[0].auth == Auth(mode: .off))
        #expect(routes[1].auth == Auth(mode: .any, scopesAllOf: ["orders:read"], audiences: ["http://127.0.0.1:8080"], issuers: ["http://127.0.0.1:9000"]))
        // The audience is what the demo authorization server puts in its JWTs.
        #expect(routes[1].auth?.audiences == [demoAuth.tokens.jwtAudience])
        // Every scope the route asks for is one a demo client can get.
        let demoScopes = Set(demoAuth.clients.flatMap(\.scopes))
        #expect(routes[1].auth?.scopesAllOf.allSatisfy { demoScopes.contains($0) } == true)
    }

    @Test func authorizationServerDefaults() throws {
        let configuration = try Gateway.parse(yaml: gateway(extra: authorizationServer))
        let server = try #require(configuration.authorizationServer)
        #expect(server.issuer == "http://127.0.0.1:9000")
        #expect(server.clientID == "gw")
        #expect(server.clientSecret == "gw-secret")
        #expect(server.exchange == .tokenExchange)
        #expect(server.cache == AuthorizationServer.Cache(maxTTLMilliseconds: 30_000, negativeTTLMilliseconds: 5000, capacity: 100_000))
        #expect(server.jwks == AuthorizationServer.JWKS(minTTLMilliseconds: 60_000, maxTTLMilliseconds: 86_400_000, unknownKidIntervalMilliseconds: 30_000))
        #expect(server.discoveryRetry == AuthorizationServer.Retry(initialMilliseconds: 250, maxMilliseconds: 10_000))
        #expect(server.clockSkewMilliseconds == 30_000)
        #expect(server.forwardHeader == "Authorization")
        #expect(server == AuthorizationServer(issuer: "http://127.0.0.1:9000", clientID: "gw", clientSecret: "gw-secret"))
        #expect(server.metadataURL == "http://127.0.0.1:9000/.well-known/oauth-authorization-server")
        // The routes are untouched by the section's presence.
        #expect(configuration.routes.first?.auth == nil)
    }

    @Test func everyAuthorizationServerFieldIsRead() throws {
        let configuration = try Gateway.parse(yaml: gateway(extra: """
            authorization_server:
              issuer: https://auth.example.com
              client_id: gatehouse-gateway
              client_secret: inline-secret
              exchange: introspection_jwt
              cache: {max_ttl: 1h, negative_ttl: 0, capacity: 10000000}
              jwks: {min_ttl: 1s, max_ttl: 168h, unknown_kid_interval: 1m}
              discovery_retry: {initial: 1ms, max: 10m}
              clock_skew: 0
              forward_header: X-Gatehouse-JWT
            """))
        #expect(configuration.authorizationServer == AuthorizationServer(
            issuer: "https://auth.example.com",
            clientID: "gatehouse-gateway",
            clientSecret: "inline-secret",
            exchange: .introspectionJWT,
            cache: .init(maxTTLMilliseconds: 3_600_000, negativeTTLMilliseconds: 0, capacity: 10_000_000),
            jwks: .init(minTTLMilliseconds: 1000, maxTTLMilliseconds: 604_800_000, unknownKidIntervalMilliseconds: 60_000),
            discoveryRetry: .init(initialMilliseconds: 1, maxMilliseconds: 600_000),
            clockSkewMilliseconds: 0,
            forwardHeader: "X-Gatehouse-JWT"
        ))
    }

    @Test func metadataURLFollowsRFC8414() {
        #expect(AuthorizationServer(issuer: "https://auth.example", clientID: "c", clientSecret: "s").metadataURL
            == "https://auth.example/.well-known/oauth-authorization-server")
        #expect(AuthorizationServer(issuer: "https://auth.example:8443", clientID: "c", clientSecret: "s").metadataURL
            == "https://auth.example:8443/.well-known/oauth-authorization-server")
        // An issuer with a path: the well-known segment goes between host and path (RFC 8414 §3.1).
        #expect(AuthorizationServer(issuer: "https://auth.example/tenant/a", clientID: "c", clientSecret: "s").metadataURL
            == "https://auth.example/.well-known/oauth-authorization-server/tenant/a")
    }

    @Test func clientSecretIsNeverPrinted() throws {
        let configuration = try Gateway.parse(yaml: gateway(extra: authorizationServer))
        let server = try #require(configuration.authorizationServer)
        for text in [String(describing: server), String(reflecting: server), "\(configuration)", String(reflecting: configuration)] {
            #expect(!text.contains("gw-secret"), "\(text)")
        }
        #expect(String(describing: server).contains("<redacted>"))
    }

    @Test func clientSecretFromEnvironment() throws {
        let yaml = gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: {env: GW_SECRET}}")
        let configuration = try Gateway.parse(yaml: yaml, environment: ["GW_SECRET": "from-env"])
        #expect(configuration.authorizationServer?.clientSecret == "from-env")
        for environment in [[:], ["GW_SECRET": ""], ["OTHER": "x"]] {
            let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: yaml, environment: environment) }
            #expect(error?.code == .missingSecret)
            #expect(error?.keyPath == "authorization_server.client_secret")
            #expect(error?.reason.contains("GW_SECRET") == true)
        }
    }

    @Test func clientSecretFromFile() throws {
        let directory = "/tmp/gatehouse-gateway-config-test-\(UInt64.random(in: 0...UInt64.max))"
        #expect(system("mkdir -p \(directory) && printf 'file-secret\\n' > \(directory)/gateway-secret") == 0)
        defer { _ = system("rm -rf \(directory)") }
        let yaml = gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: {file: gateway-secret}}")
        let configuration = try Gateway.parse(yaml: yaml, baseDirectory: directory)
        #expect(configuration.authorizationServer?.clientSecret == "file-secret")

        // load() resolves the file against the configuration file's directory.
        #expect(writeFile("\(directory)/gateway.yaml", yaml))
        let loaded = try Gateway.load(file: "\(directory)/gateway.yaml", environment: [:])
        #expect(loaded.authorizationServer?.clientSecret == "file-secret")

        let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: yaml, baseDirectory: directory + "/missing") }
        #expect(error?.code == .missingSecret)
        #expect(error?.keyPath == "authorization_server.client_secret")
    }

    @Test func routeAuthDefaults() throws {
        let configuration = try Gateway.parse(yaml: gatewayWithAuth("mode: any"))
        let auth = try #require(configuration.routes.first?.auth)
        #expect(auth.mode == .any)
        #expect(auth.scopesAllOf.isEmpty)
        #expect(auth.scopesAnyOf.isEmpty)
        #expect(auth.audiences.isEmpty)  // any audience
        #expect(auth.issuers == ["http://127.0.0.1:9000"])  // the authorization server's
        #expect(auth.realm == "gatehouse")
        #expect(auth == Auth(mode: .any, issuers: ["http://127.0.0.1:9000"]))

        // Mode none needs no authorization server, and has no issuers.
        let open = try Gateway.parse(yaml: gateway(routes: "[{cluster: backend, auth: {mode: none}}]"))
        #expect(open.authorizationServer == nil)
        #expect(open.routes.first?.auth == Auth(mode: .off))
        #expect(open.routes.first?.auth?.issuers == [])
        // An explicit null is the same as no section.
        #expect(try Gateway.parse(yaml: gateway(routes: "[{cluster: backend, auth: ~}]")).routes.first?.auth == nil)
    }

    @Test func everyRouteAuthFieldIsRead() throws {
        let configuration = try Gateway.parse(yaml: gateway(
            routes: """
                [{name: a, match: {path_prefix: /a}, cluster: backend,
                  auth: {mode: jwt, scopes_all_of: [orders:read, 'x!#[]~', orders:read], scopes_any_of: [orders:write, admin],
                         audiences: ['http://127.0.0.1:8080', urn:example:api, 'http://127.0.0.1:8080'],
                         issuers: ['https://auth.example/', 'http://[::1]:9000', 'https://auth.example/'], realm: Orders API}},
                 {name: b, match: {path_prefix: /b}, cluster: backend, auth: {mode: opaque}},
                 {name: c, match: {path_prefix: /c}, cluster: backend, auth: {mode: none}},
                 {name: d, cluster: backend}]
                """,
            extra: authorizationServer
        ))
        #expect(configuration.routes.map(\.auth) == [
            Auth(
                mode: .jwt,
                scopesAllOf: ["orders:read", "x!#[]~"],  // duplicates dropped, order kept
                scopesAnyOf: ["orders:write", "admin"],
                audiences: ["http://127.0.0.1:8080", "urn:example:api"],
                issuers: ["https://auth.example/", "http://[::1]:9000"],
                realm: "Orders API"
            ),
            Auth(mode: .opaque, issuers: ["http://127.0.0.1:9000"]),
            Auth(mode: .off),
            nil,
        ])
    }

    @Test func authModes() {
        #expect(Auth.Mode.allCases.map(\.rawValue) == ["none", "jwt", "opaque", "any"])
        #expect(Auth.Mode.allCases.map(\.requiresToken) == [false, true, true, true])
        #expect(Auth.Mode.allCases.map(\.acceptsJWT) == [false, true, false, true])
        #expect(Auth.Mode.allCases.map(\.acceptsOpaque) == [false, false, true, true])
    }

    @Test(arguments: [
        // The authorization_server section.
        (gateway(extra: "authorization_server: [a]"), "authorization_server"),
        (gateway(extra: "authorization_server: {client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'https://a.example/', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'http://auth.example', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        // Plain http only on a loopback address, parsed as one: these names merely start with `127.`.
        (gateway(extra: "authorization_server: {issuer: 'http://127.attacker.example', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1.nip.io:9000', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'https://a.example?x=1', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'https://a.example#f', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'ftp://a.example', client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: a.example, client_id: gw, client_secret: s}"), "authorization_server.issuer"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_secret: s}"), "authorization_server.client_id"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: 'a:b', client_secret: s}"), "authorization_server.client_id"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: 'a b', client_secret: s}"), "authorization_server.client_id"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw}"), "authorization_server.client_secret"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: ''}"), "authorization_server.client_secret"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: [s]}"), "authorization_server.client_secret"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: {env: UNSET_SECRET}}"), "authorization_server.client_secret"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: {env: A, file: b}}"), "authorization_server.client_secret"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: {envv: A}}"), "authorization_server.client_secret.envv"),
        (gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw, client_secret: {file: /nonexistent/secret}}"), "authorization_server.client_secret"),
        (gateway(extra: authorizationServer("exchange: introspection")), "authorization_server.exchange"),
        (gateway(extra: authorizationServer("cache: {max_ttl: 999ms}")), "authorization_server.cache.max_ttl"),
        (gateway(extra: authorizationServer("cache: {max_ttl: 61m}")), "authorization_server.cache.max_ttl"),
        (gateway(extra: authorizationServer("cache: {max_ttl: soon}")), "authorization_server.cache.max_ttl"),
        (gateway(extra: authorizationServer("cache: {negative_ttl: 301s}")), "authorization_server.cache.negative_ttl"),
        (gateway(extra: authorizationServer("cache: {capacity: 0}")), "authorization_server.cache.capacity"),
        (gateway(extra: authorizationServer("cache: {capacity: 10000001}")), "authorization_server.cache.capacity"),
        (gateway(extra: authorizationServer("cache: {size: 10}")), "authorization_server.cache.size"),
        (gateway(extra: authorizationServer("jwks: {min_ttl: 0}")), "authorization_server.jwks.min_ttl"),
        (gateway(extra: authorizationServer("jwks: {min_ttl: 25h}")), "authorization_server.jwks.min_ttl"),
        (gateway(extra: authorizationServer("jwks: {max_ttl: 169h}")), "authorization_server.jwks.max_ttl"),
        (gateway(extra: authorizationServer("jwks: {min_ttl: 2m, max_ttl: 1m}")), "authorization_server.jwks.max_ttl"),
        (gateway(extra: authorizationServer("jwks: {max_ttl: 30s}")), "authorization_server.jwks.max_ttl"),  // default min_ttl is 60s
        (gateway(extra: authorizationServer("jwks: {unknown_kid_interval: 0}")), "authorization_server.jwks.unknown_kid_interval"),
        (gateway(extra: authorizationServer("jwks: {refresh: 1m}")), "authorization_server.jwks.refresh"),
        (gateway(extra: authorizationServer("discovery_retry: {initial: 0}")), "authorization_server.discovery_retry.initial"),
        (gateway(extra: authorizationServer("discovery_retry: {initial: 61s}")), "authorization_server.discovery_retry.initial"),
        (gateway(extra: authorizationServer("discovery_retry: {initial: 20s}")), "authorization_server.discovery_retry.initial"),  // default max is 10s
        (gateway(extra: authorizationServer("discovery_retry: {initial: 1s, max: 500ms}")), "authorization_server.discovery_retry.max"),
        (gateway(extra: authorizationServer("discovery_retry: {max: 11m}")), "authorization_server.discovery_retry.max"),
        (gateway(extra: authorizationServer("discovery_retry: {jitter: 1}")), "authorization_server.discovery_retry.jitter"),
        (gateway(extra: authorizationServer("clock_skew: 6m")), "authorization_server.clock_skew"),
        (gateway(extra: authorizationServer("clock_skew: -1s")), "authorization_server.clock_skew"),
        (gateway(extra: authorizationServer("forward_header: 'X Token'")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: 'X-Token:'")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: ''")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: Connection")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: Proxy-Authorization")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: x-forwarded-for")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: Host")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("forward_header: Content-Length")), "authorization_server.forward_header"),
        (gateway(extra: authorizationServer("timeout: 1s")), "authorization_server.timeout"),
        // A private CA only makes sense for an https issuer, and must be readable.
        (gateway(extra: authorizationServer("ca_file: /etc/hostname")), "authorization_server.ca_file"),
        (
            gateway(extra: "authorization_server: {issuer: 'https://auth.example', client_id: gw, client_secret: s, ca_file: /nonexistent/ca.pem}"),
            "authorization_server.ca_file"
        ),
        // A route's auth section.
        (gateway(routes: "[{cluster: backend, auth: jwt}]", extra: authorizationServer), "routes[0].auth"),
        (gatewayWithAuth(""), "routes[0].auth.mode"),
        (gatewayWithAuth("mode: bearer"), "routes[0].auth.mode"),
        (gateway(routes: "[{cluster: backend, auth: {mode: jwt}}]"), "routes[0].auth.mode"),
        (gateway(routes: "[{cluster: backend, auth: {mode: any}}]"), "routes[0].auth.mode"),
        (gateway(routes: "[{cluster: backend, auth: {mode: none}}, {name: b, cluster: backend, auth: {mode: opaque}}]"), "routes[1].auth.mode"),
        (gatewayWithAuth("mode: any, scopes_all_of: ['a b']"), "routes[0].auth.scopes_all_of[0]"),
        (gatewayWithAuth("mode: any, scopes_all_of: read"), "routes[0].auth.scopes_all_of"),
        (gatewayWithAuth("mode: any, scopes_any_of: [ok, 'quo\"te']"), "routes[0].auth.scopes_any_of[1]"),
        (gatewayWithAuth("mode: any, scopes_any_of: [ok, 'back\\\\slash']"), "routes[0].auth.scopes_any_of[1]"),
        (gatewayWithAuth("mode: any, scopes_any_of: [ok, 'caf\u{E9}']"), "routes[0].auth.scopes_any_of[1]"),
        (gatewayWithAuth("mode: any, audiences: [a, '']"), "routes[0].auth.audiences[1]"),
        (gatewayWithAuth("mode: any, issuers: []"), "routes[0].auth.issuers"),
        (gatewayWithAuth("mode: any, issuers: ['http://evil.example']"), "routes[0].auth.issuers[0]"),
        (gatewayWithAuth("mode: any, issuers: ['http://127.0.0.1:9000', 'https://a.example?x']"), "routes[0].auth.issuers[1]"),
        (gatewayWithAuth("mode: any, realm: 'a\"b'"), "routes[0].auth.realm"),
        (gatewayWithAuth("mode: any, realm: ''"), "routes[0].auth.realm"),
        (gatewayWithAuth("mode: none, scopes_all_of: [a]"), "routes[0].auth.scopes_all_of"),
        (gatewayWithAuth("mode: none, audiences: [a]"), "routes[0].auth.audiences"),
        (gatewayWithAuth("mode: none, realm: r"), "routes[0].auth.realm"),
        (gatewayWithAuth("mode: jwt, scope: a"), "routes[0].auth.scope"),
        (gatewayWithAuth("mode: jwt, required: true"), "routes[0].auth.required"),
    ])
    func invalidAuthValuesAreNamed(yaml: String, keyPath: String) {
        let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: yaml) }
        #expect(error?.keyPath == keyPath, "\(yaml)")
    }

    @Test func authErrorCodesAndReasons() {
        let missingSecret = #expect(throws: ConfigurationError.self) {
            try Gateway.parse(yaml: gateway(extra: "authorization_server: {issuer: 'http://127.0.0.1:9000', client_id: gw}"))
        }
        #expect(missingSecret?.code == .missingSecret)
        let missingIssuer = #expect(throws: ConfigurationError.self) {
            try Gateway.parse(yaml: gateway(extra: "authorization_server: {client_id: gw, client_secret: s}"))
        }
        #expect(missingIssuer?.code == .missingKey)
        let missingMode = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gatewayWithAuth("")) }
        #expect(missingMode?.code == .missingKey)
        let unknown = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gatewayWithAuth("mode: jwt, scope: a"), file: "gateway.yaml") }
        #expect(unknown?.code == .unknownKey)
        #expect(unknown?.description.hasPrefix("gateway.yaml: routes[0].auth.scope: unknown key") == true)
        let noServer = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(routes: "[{cluster: backend, auth: {mode: jwt}}]")) }
        #expect(noServer?.code == .invalidValue)
        #expect(noServer?.reason.contains("authorization_server") == true)
        let range = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(extra: authorizationServer("cache: {max_ttl: 2h}"))) }
        #expect(range?.reason == "must be between 1s and 1h, got 2h")
        let skew = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(extra: authorizationServer("clock_skew: 301500ms"))) }
        #expect(skew?.reason == "must be between 0 and 5m, got 301500ms")
    }

    @Test(arguments: [
        // Listeners and admin.
        (gateway(listeners: nil), "listeners"),
        (gateway(listeners: "[]"), "listeners"),
        (gateway(listeners: "[{host: 127.0.0.1}]"), "listeners[0].port"),
        (gateway(listeners: "[{port: 70000}]"), "listeners[0].port"),
        (gateway(listeners: "[{port: 8080, hots: x}]"), "listeners[0].hots"),
        (gateway(listeners: "[{port: 8443, tls: {private_key: k.pem}}]"), "listeners[0].tls.certificate"),
        (gateway(listeners: "[{port: 8443, tls: {certificate: c.pem}}]"), "listeners[0].tls.private_key"),
        (gateway(listeners: "[{port: 8443, tls: {certificate: c.pem, private_key: k.pem, alpn: h2}}]"), "listeners[0].tls.alpn"),
        (gateway(listeners: "[{port: 8443, tls: {certificate: c.pem, private_key: k.pem, http2: maybe}}]"), "listeners[0].tls.http2"),
        (gateway(listeners: "[{port: 8080}, {host: 127.0.0.1, port: 8080}]"), "listeners[1].port"),
        (gateway(listeners: "[{port: 9901}]", extra: "admin: {}"), "admin.port"),
        (gateway(extra: "admin: {port: 9901, bind: x}"), "admin.bind"),
        (gateway(extra: "event_loop_threads: 0"), "event_loop_threads"),
        (gateway(extra: "event_loop_threads: 257"), "event_loop_threads"),
        // Limits.
        (gateway(extra: "limits: {max_header_bytes: 100}"), "limits.max_header_bytes"),
        (gateway(extra: "limits: {max_header_count: 0}"), "limits.max_header_count"),
        (gateway(extra: "limits: {max_body_bytes: 1099511627777}"), "limits.max_body_bytes"),
        (gateway(extra: "limits: {max_header_size: 1}"), "limits.max_header_size"),
        (gateway(extra: "limits: {header_read_timeout: soon}"), "limits.header_read_timeout"),
        (gateway(extra: "limits: {idle_timeout: 0}"), "limits.idle_timeout"),
        // Trusted proxies.
        (gateway(extra: "trusted_proxies: [127.0.0.1/32, 10.0.0.1/8]"), "trusted_proxies[1]"),
        (gateway(extra: "trusted_proxies: [10.0.0.0/33]"), "trusted_proxies[0]"),
        (gateway(extra: "trusted_proxies: ['::1/129']"), "trusted_proxies[0]"),
        (gateway(extra: "trusted_proxies: ['10.0.0.0/8', '1::2::3/64']"), "trusted_proxies[1]"),
        (gateway(extra: "trusted_proxies: [localhost]"), "trusted_proxies[0]"),
        // Clusters.
        (gateway(clusters: nil), "clusters"),
        (gateway(clusters: "[]"), "clusters"),
        (gateway(clusters: "[{targets: ['http://127.0.0.1:1']}]"), "clusters[0].name"),
        (gateway(clusters: "[{name: 'a b', targets: ['http://127.0.0.1:1']}]"), "clusters[0].name"),
        (gateway(clusters: "[{name: backend, targets: ['http://127.0.0.1:1']}, {name: backend, targets: ['http://127.0.0.1:2']}]"), "clusters[1].name"),
        (gateway(clusters: "[{name: backend}]"), "clusters[0].targets"),
        (gateway(clusters: "[{name: backend, targets: []}]"), "clusters[0].targets"),
        (gateway(clusters: "[{name: backend, targets: ['https://127.0.0.1:18080']}]"), "clusters[0].targets[0]"),
        (gateway(clusters: "[{name: backend, targets: ['http://127.0.0.1:18080/api']}]"), "clusters[0].targets[0]"),
        (gateway(clusters: "[{name: backend, targets: ['http://127.0.0.1:18080?x=1']}]"), "clusters[0].targets[0]"),
        (gateway(clusters: "[{name: backend, targets: ['http://127.0.0.1']}]"), "clusters[0].targets[0]"),
        (gateway(clusters: "[{name: backend, targets: ['127.0.0.1:18080']}]"), "clusters[0].targets[0]"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1', 'http://b:2', 'http://a:1/']}]"), "clusters[0].targets[2]"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], load_balancing: random}]"), "clusters[0].load_balancing"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], connect_timeout: 2 seconds}]"), "clusters[0].connect_timeout"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], connect_timeout: 0}]"), "clusters[0].connect_timeout"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], pool: {max_connections: 4, max_idle: 5}}]"), "clusters[0].pool.max_idle"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], pool: {max_conns: 4}}]"), "clusters[0].pool.max_conns"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], pool: {max_pending: -1}}]"), "clusters[0].pool.max_pending"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], pool: {max_pending: 1048577}}]"), "clusters[0].pool.max_pending"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], health_check: {interval: 5s}}]"), "clusters[0].health_check.path"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], health_check: {path: healthz}}]"), "clusters[0].health_check.path"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], health_check: {path: /h, interval: 1s, timeout: 2s}}]"), "clusters[0].health_check.timeout"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], health_check: {path: /h, healthy_threshold: 0}}]"), "clusters[0].health_check.healthy_threshold"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], outlier_detection: {max_ejection_percent: 10}}]"), "clusters[0].outlier_detection.max_ejection_percent"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], retries: {attempts: 11}}]"), "clusters[0].retries.attempts"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], retries: {budget_percent: 101}}]"), "clusters[0].retries.budget_percent"),
        (gateway(clusters: "[{name: backend, targets: ['http://a:1'], retries: {backoff_base: 1s, backoff_max: 500ms}}]"), "clusters[0].retries.backoff_max"),
        // Routes.
        (gateway(routes: nil), "routes"),
        (gateway(routes: "[]"), "routes"),
        (gateway(routes: "[{name: r}]"), "routes[0].cluster"),
        (gateway(routes: "[{cluster: backend}, {name: b, cluster: backend}, {cluster: missing}]"), "routes[2].cluster"),
        (gateway(routes: "[{name: r, cluster: backend}, {name: r, cluster: backend}]"), "routes[1].name"),
        (gateway(routes: "[{cluster: backend, match: {path_prefix: /api, path: /api/x}}]"), "routes[0].match.path"),
        (gateway(routes: "[{cluster: backend, match: {path_prefix: api}}]"), "routes[0].match.path_prefix"),
        (gateway(routes: "[{cluster: backend, match: {path: '/a b'}}]"), "routes[0].match.path"),
        (gateway(routes: "[{cluster: backend, match: {prefix: /api}}]"), "routes[0].match.prefix"),
        (gateway(routes: "[{cluster: backend, match: {methods: [GET, post]}}]"), "routes[0].match.methods[1]"),
        (gateway(routes: "[{cluster: backend, match: {methods: ['GET POST']}}]"), "routes[0].match.methods[0]"),
        (gateway(routes: "[{cluster: backend, match: {host: 'a/b'}}]"), "routes[0].match.host"),
        (gateway(routes: "[{cluster: backend, strip_prefix: true}]"), "routes[0].strip_prefix"),
        (gateway(routes: "[{cluster: backend, match: {path: /x}, strip_prefix: true}]"), "routes[0].strip_prefix"),
        (gateway(routes: "[{cluster: backend, rewrite_prefix: /v2}]"), "routes[0].rewrite_prefix"),
        (gateway(routes: "[{cluster: backend, match: {path_prefix: /v1}, rewrite_prefix: v2}]"), "routes[0].rewrite_prefix"),
        (gateway(routes: "[{cluster: backend, match: {path_prefix: /v1}, strip_prefix: true, rewrite_prefix: /v2}]"), "routes[0].rewrite_prefix"),
        (gateway(routes: "[{cluster: backend, timeouts: {per_try: 31s, total: 30s}}]"), "routes[0].timeouts.per_try"),
        (gateway(routes: "[{cluster: backend, timeouts: {per_try: 45s}}]"), "routes[0].timeouts.per_try"),  // default total is 30s
        (gateway(routes: "[{cluster: backend, timeouts: {total: 0}}]"), "routes[0].timeouts.total"),
        (gateway(routes: "[{cluster: backend, max_body_bytes: -1}]"), "routes[0].max_body_bytes"),
        (gateway(routes: "[{cluster: backend, policy: jwt}]"), "routes[0].policy"),
        // The root.
        (gateway(extra: "clusterz: []"), "clusterz"),
    ])
    func invalidValuesAreNamed(yaml: String, keyPath: String) {
        let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: yaml) }
        #expect(error?.keyPath == keyPath, "\(yaml)")
    }

    @Test func errorCodes() {
        let missing = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(listeners: nil)) }
        #expect(missing?.code == .missingKey)
        let unknown = #expect(throws: ConfigurationError.self) {
            try Gateway.parse(yaml: gateway(extra: "limits: {max_header_size: 1}"), file: "gateway.yaml")
        }
        #expect(unknown?.code == .unknownKey)
        #expect(unknown?.description.hasPrefix("gateway.yaml: limits.max_header_size: unknown key") == true)
        let cluster = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(routes: "[{cluster: nope}]")) }
        #expect(cluster?.code == .invalidValue)
        #expect(cluster?.reason.contains("backend") == true)  // lists the clusters there are
        let invalid = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: "listeners: [unclosed") }
        #expect(invalid?.code == .invalidYAML)
        let unreadable = #expect(throws: ConfigurationError.self) { try Gateway.load(file: "/nonexistent/gateway.yaml", environment: [:]) }
        #expect(unreadable?.code == .unreadableFile)
    }

    @Test(arguments: [
        ("250ms", 250), ("2s", 2000), ("1m", 60_000), ("1h", 3_600_000), ("750", 750), ("0", 0), ("0ms", 0), ("'15s'", 15_000),
    ])
    func millisecondDurations(text: String, milliseconds: Int) throws {
        let configuration = try Gateway.parse(yaml: gateway(extra: "limits: {drain_timeout: \(text)}"))
        #expect(configuration.limits.drainTimeoutMilliseconds == milliseconds)
    }

    @Test(arguments: ["1.5s", "-5", "5d", "ms", "s", "''", "2 s", "+5", "1s500ms", "99999999999999999999", "9999999999999999h"])
    func invalidMillisecondDurations(text: String) {
        let error = #expect(throws: ConfigurationError.self) { try Gateway.parse(yaml: gateway(extra: "limits: {drain_timeout: \(text)}")) }
        #expect(error?.keyPath == "limits.drain_timeout")
    }

    @Test func cidrIPv4() throws {
        let block = try #require(CIDR.parse("10.0.0.0/8"))
        #expect(block.address == [10, 0, 0, 0])
        #expect(block.prefixLength == 8)
        #expect(block.description == "10.0.0.0/8")
        #expect(block.contains(address("10.1.2.3")))
        #expect(block.contains(address("10.255.255.255")))
        #expect(!block.contains(address("11.0.0.1")))
        #expect(!block.contains(address("9.255.255.255")))
        // IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 peer) matches as IPv4; plain IPv6 never does.
        #expect(block.contains(address("::ffff:10.1.2.3")))
        #expect(!block.contains(address("::ffff:11.1.2.3")))
        #expect(!block.contains(address("::a01:203")))

        let odd = try #require(CIDR.parse("192.168.0.0/23"))
        #expect(odd.contains(address("192.168.1.255")))
        #expect(!odd.contains(address("192.168.2.0")))

        let single = try #require(CIDR.parse("127.0.0.1"))
        #expect(single.prefixLength == 32)
        #expect(single.contains(address("127.0.0.1")))
        #expect(!single.contains(address("127.0.0.2")))

        let everything = try #require(CIDR.parse("0.0.0.0/0"))
        #expect(everything.contains(address("203.0.113.9")))
        #expect(!everything.contains(address("2001:db8::1")))
    }

    @Test func cidrIPv6() throws {
        let loopback = try #require(CIDR.parse("::1/128"))
        #expect(loopback.address == [UInt8](repeating: 0, count: 15) + [1])
        #expect(loopback.prefixLength == 128)
        #expect(loopback.description == "::1/128")
        #expect(loopback.contains(address("::1")))
        #expect(loopback.contains(address("0:0:0:0:0:0:0:1")))
        #expect(!loopback.contains(address("::2")))
        #expect(!loopback.contains(address("127.0.0.1")))

        let documentation = try #require(CIDR.parse("2001:db8::/32"))
        #expect(documentation.address == [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 12))
        #expect(documentation.description == "2001:db8::/32")
        #expect(documentation.contains(address("2001:db8::1")))
        #expect(documentation.contains(address("2001:DB8:ffff:1:2:3:4:5")))
        #expect(!documentation.contains(address("2001:db9::1")))
        #expect(!documentation.contains(address("10.0.0.1")))

        let linkLocal = try #require(CIDR.parse("fe80::/10"))
        #expect(linkLocal.contains(address("febf::1")))
        #expect(!linkLocal.contains(address("fec0::1")))

        #expect(CIDR.parse("::/0")?.description == "::/0")
        #expect(CIDR.parse("::/0")?.contains(address("2001:db8::1")) == true)
        #expect(CIDR.parse("2001:db8::1")?.prefixLength == 128)
        #expect(CIDR.parse("1:2:3:4:5:6:7:8/128")?.address == [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8])
        #expect(CIDR.parse("1:2:3:4:5:6:7::/128")?.description == "1:2:3:4:5:6:7:0/128")
        #expect(CIDR.parse("::ffff:1.2.3.4")?.address == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4])
        #expect(CIDR.parse("64:ff9b::/96")?.description == "64:ff9b::/96")
        // RFC 5952: the first of the longest zero runs is compressed; a single zero group is not.
        #expect(CIDR.parse("2001:db8:0:0:1:0:0:1")?.description == "2001:db8::1:0:0:1/128")
        #expect(CIDR.parse("2001:db8:0:1:1:1:1:1")?.description == "2001:db8:0:1:1:1:1:1/128")
    }

    @Test(arguments: [
        "", "/8", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/8/8", "10.0.0.1/8", "10.0.0.0/33", "256.0.0.0/8", "1.2.3", "1.2.3.4.5",
        "01.2.3.4", "1..2.3", "a.b.c.d", " 10.0.0.0/8", "::1/129", "::1/-1", "1::2::3", ":::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7::8", "12345::", "g::1", ":1::", "1::2:", "fe80::1%eth0", "1.2.3.4::", "::1.2.3", "2001:db8::/31x", "::ffff:1.2.3.4:5",
    ])
    func invalidCIDRs(text: String) {
        #expect(CIDR.parse(text) == nil)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Writes `text` to `path`; whether that worked.
private func writeFile(_ path: String, _ text: String) -> Bool {
    guard let handle = fopen(path, "wb") else { return false }
    defer { fclose(handle) }
    return fputs(text, handle) >= 0
}

@Suite struct RequestHygieneConfigurationTests {
    let base = """
        listeners: [{port: 8080}]
        clusters: [{name: be, targets: ['http://127.0.0.1:9']}]

        """

    @Test func defaults() throws {
        let configuration = try GatewayConfiguration.parse(yaml: base + "routes: [{match: {path_prefix: /}, cluster: be}]")
        #expect(configuration.requestHygiene.stripFromUntrusted.contains("x-real-ip"))
        #expect(configuration.requestHygiene.underscoreHeaders == .dropLookalikes)
        #expect(configuration.requestHygiene.pathParameters == .normalize)
        #expect(configuration.routes[0].upgrades == ["websocket"])
        #expect(configuration.routes[0].timeouts.tunnelIdleMilliseconds == 600_000)
    }

    @Test func values() throws {
        let configuration = try GatewayConfiguration.parse(yaml: base + """
            request_hygiene: {strip_from_untrusted: [X-Tenant, x-tenant, X-Real-IP], underscore_headers: drop, path_parameters: reject}
            routes: [{match: {path_prefix: /}, cluster: be, upgrades: [WebSocket, foo], timeouts: {tunnel_idle: 90s}}]
            """)
        #expect(configuration.requestHygiene.stripFromUntrusted == ["x-tenant", "x-real-ip"])
        #expect(configuration.requestHygiene.underscoreHeaders == .drop)
        #expect(configuration.requestHygiene.pathParameters == .reject)
        #expect(configuration.routes[0].upgrades == ["websocket", "foo"])
        #expect(configuration.routes[0].timeouts.tunnelIdleMilliseconds == 90_000)
    }

    @Test(arguments: [
        ("request_hygiene: {underscore_headers: maybe}\nroutes: [{match: {path_prefix: /}, cluster: be}]", "request_hygiene.underscore_headers"),
        ("request_hygiene: {path_parameters: strip}\nroutes: [{match: {path_prefix: /}, cluster: be}]", "request_hygiene.path_parameters"),
        ("request_hygiene: {strip_from_untrusted: [Content-Length]}\nroutes: [{match: {path_prefix: /}, cluster: be}]", "request_hygiene.strip_from_untrusted[0]"),
        ("request_hygiene: {strip_from_untrusted: ['bad name']}\nroutes: [{match: {path_prefix: /}, cluster: be}]", "request_hygiene.strip_from_untrusted[0]"),
        ("routes: [{match: {path_prefix: /}, cluster: be, upgrades: [websocket, h2c]}]", "routes[0].upgrades[1]"),
        ("routes: [{match: {path_prefix: /}, cluster: be, upgrades: [H2C]}]", "routes[0].upgrades[0]"),
    ])
    func invalidValuesAreNamed(yaml: String, keyPath: String) {
        do {
            _ = try GatewayConfiguration.parse(yaml: base + yaml)
            Issue.record("accepted: \(yaml)")
        } catch let error as ConfigurationError {
            #expect(error.keyPath == keyPath, "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
