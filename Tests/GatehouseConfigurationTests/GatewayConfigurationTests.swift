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

private typealias Gateway = GatewayConfiguration
private typealias CIDR = GatewayConfiguration.CIDR

private func address(_ text: String) -> [UInt8] {
    CIDR.parseAddress(text) ?? []
}

@Suite struct GatewayConfigurationTests {
    @Test func minimalFileGetsTheDocumentedDefaults() throws {
        let configuration = try Gateway.parse(yaml: gateway())
        #expect(configuration.listeners == [Gateway.Listener(host: "127.0.0.1", port: 8080, tls: nil)])
        #expect(configuration.eventLoopThreads == nil)
        #expect(configuration.admin == nil)
        #expect(configuration.trustedProxies.isEmpty)

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
                pool: {max_connections: 64, max_idle: 8, idle_timeout: 30s}
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
                pool: .init(maxConnections: 64, maxIdle: 8, idleTimeoutMilliseconds: 30_000),
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
