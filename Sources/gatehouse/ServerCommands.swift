import ArgumentParser
import GatehouseAuthServer
import GatehouseConfiguration
import GatehouseDemoBackend
import GatehouseGateway
import GatehouseObservability
import GatehouseServiceAuth
import GatehouseStore
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `gatehouse auth`: runs the authorization server.
struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "auth", abstract: "Run the OAuth 2.0 authorization server.")

    @Option(help: "The authorization server's YAML configuration file.")
    var config: String

    @Option(help: "Directory for the SQLite database (overrides data_dir in the file; default ./gatehouse-data).")
    var dataDir: String?

    @Option(help: "Listen port (overrides the file; 0 picks a free port). On a loopback http issuer, the issuer follows it.")
    var port: Int?

    @Option(help: "Listen address (overrides the file).")
    var host: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try bootstrapLogging(logging)
        var configuration = try loadConfiguration(config)
        if let host { configuration.listen.host = host }
        if let port { try AuthRunner.overridePort(&configuration, port: port) }
        try await AuthRunner.run(configuration: configuration, dataDirectory: dataDir ?? configuration.dataDirectory ?? "gatehouse-data", logger: logger) { _ in }
    }
}

/// `gatehouse demo`: the authorization server with the demo clients and users (the gateway and demo backend join it
/// in later releases).
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo", abstract: "Run the demo: authorization server with demo clients and users on SQLite.")

    @Option(help: "Directory for the demo's SQLite data.")
    var dataDir: String = "gatehouse-data"

    @Option(help: "Authorization server port; the issuer is http://127.0.0.1:<port>.")
    var authPort: Int = 9000

    @Option(help: "Gateway port.")
    var gatewayPort: Int = 8080

    @Option(help: "Demo backend port (the gateway's demo cluster follows it).")
    var backendPort: Int = 8081

    @Option(help: "Gateway admin port (/healthz, /readyz, /metrics).")
    var adminPort: Int = 9901

    @Option(help: "Authorization server admin port (/healthz, /readyz, /metrics).")
    var authAdminPort: Int = 9902

    @Flag(help: "Run only the authorization server (no gateway, no demo backend).")
    var authOnly = false

    @Option(help: "Directory holding the demo configuration (auth.yaml, gateway.yaml).")
    var configDir: String = "config/demo"

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try bootstrapLogging(logging)
        var configuration = try loadConfiguration(configDir + "/auth.yaml")
        configuration.listen.host = "127.0.0.1"
        try AuthRunner.overridePort(&configuration, port: authPort, forceLoopbackIssuer: true)
        configuration.admin = .init(host: "127.0.0.1", port: authAdminPort)
        let dataDir = self.dataDir
        let ports = authOnly ? nil : (gateway: gatewayPort, backend: backendPort, admin: adminPort)
        var (services, store) = try await AuthRunner.prepare(configuration: configuration, dataDirectory: dataDir, logger: logger) { issuer in
            print(DemoCommand.banner(issuer: issuer, dataDirectory: dataDir, ports: ports))
            flushStandardOutput()
        }
        if !authOnly {
            let overrides = Self.gatewayOverrides(gatewayPort: gatewayPort, adminPort: adminPort, backendPort: backendPort, issuer: configuration.issuer)
            var gateway = try GatewayConfiguration.load(file: configDir + "/gateway.yaml", environment: Environment.variables())
            overrides(&gateway)
            // A SIGHUP reload applies the same overrides to the file it reads again.
            services += try GatewayRunner.services(configuration: gateway, configFile: configDir + "/gateway.yaml", logger: logger, overrides: overrides).1
            let port = backendPort
            // The backend trusts only JWTs the authorization server signed for the gateway's audience: it verifies
            // them itself against the published keys (GatehouseServiceAuth), without a call per request.
            let verifier = ServiceTokenVerifier(
                configuration: .init(jwksURL: configuration.issuer + "/.well-known/jwks.json", issuer: configuration.issuer, audiences: [configuration.tokens.jwtAudience])
            )
            let protection = DemoBackend.Protection(verifier: verifier, publicPathPrefixes: ["/public/"])
            // The backend's spans: the same endpoint and sampling as the authorization server's section, its own name.
            var backendTracing = configuration.tracing
            backendTracing.serviceName = nil
            let tracing = ServerTracing(backendTracing, defaultServiceName: "gatehouse-demo-backend", logger: logger, environment: Self.backendEnvironment())
            if let exporter = tracing.exporter { services.append(exporter) }
            services.append(DemoBackend.application(host: "127.0.0.1", port: backendPort, logger: logger, protection: protection, tracer: tracing.exportingTracer) { _ in
                print("{\"event\":\"listening\",\"service\":\"demo-backend\",\"port\":\(port)}")
                flushStandardOutput()
            })
        }
        try await AuthRunner.runGroup(services, logger: logger, store: store)
    }

    /// The environment for the demo backend's tracing: `OTEL_SERVICE_NAME` names the process's main services, not
    /// the bundled backend.
    static func backendEnvironment() -> [String: String] {
        var environment = Environment.variables()
        environment["OTEL_SERVICE_NAME"] = nil
        return environment
    }

    /// What the demo changes in `gateway.yaml`: its ports, and the issuer and backend port this run chose.
    static func gatewayOverrides(gatewayPort: Int, adminPort: Int, backendPort: Int, issuer: String) -> GatewayRunner.Overrides {
        { gateway in
            for index in gateway.listeners.indices { gateway.listeners[index].port = gatewayPort }
            gateway.admin?.port = adminPort
            // The gateway talks to this demo's authorization server, wherever --auth-port put it.
            gateway.replaceAuthorizationServerIssuer(with: issuer)
            for index in gateway.clusters.indices where gateway.clusters[index].name == "demo-backend" {
                gateway.clusters[index].targets = [.init(host: "127.0.0.1", port: backendPort)]
            }
        }
    }

    static func banner(issuer: String, dataDirectory: String, ports: (gateway: Int, backend: Int, admin: Int)?) -> String {
        let gatewayLines = ports.map { ports in
            "  Gateway               http://127.0.0.1:\(ports.gateway) (/public/ → demo backend, no token; /api/ → demo backend, token with orders:read;\n                        admin http://127.0.0.1:\(ports.admin)/readyz, /token-cache)\n  Demo backend          http://127.0.0.1:\(ports.backend) (echoes what it receives; outside /public/ only with a valid gateway JWT)"
        } ?? "  (gateway and demo backend not started: --auth-only)"
        let gatewayTry = ports.map { ports in
            "\n" + """

              # through the gateway: an opaque token in, the JWT it was exchanged for reaches the backend
              TOKEN=$(curl -s -u demo-service:demo-service-secret -d grant_type=client_credentials -d scope=orders:read \(issuer)/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
              curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:\(ports.gateway)/api/orders
            """
        } ?? ""
        return banner(issuer: issuer, dataDirectory: dataDirectory, gatewayLines: gatewayLines, gatewayTry: gatewayTry)
    }

    static func banner(issuer: String, dataDirectory: String, gatewayLines: String, gatewayTry: String = "") -> String {
        """

        Gatehouse demo is running.
          Authorization server  \(issuer)   (metadata: \(issuer)/.well-known/oauth-authorization-server)
        \(gatewayLines)
          Data directory        \(dataDirectory) (SQLite, WAL)
          Clients               demo-service (client_credentials), demo-web (authorization_code, refresh_token, password),
                                demo-spa (public: authorization_code + PKCE, implicit)
          Users                 alice / alice-password, bob / bob-password

        Try it:
          # a service token (client_credentials)
          curl -s -u demo-service:demo-service-secret -d grant_type=client_credentials -d scope=orders:read \(issuer)/token\(gatewayTry)

          # a user token with a refresh token (password grant)
          curl -s -u demo-web:demo-web-secret -d grant_type=password -d username=alice -d password=alice-password \(issuer)/token

          # refresh it (rotation: the old refresh token stops working)
          curl -s -u demo-web:demo-web-secret -d grant_type=refresh_token -d refresh_token=PASTE_REFRESH_TOKEN \(issuer)/token

          # sign in through the browser (authorization code + PKCE): open this URL
          \(issuer)/authorize?response_type=code&client_id=demo-spa&redirect_uri=http%3A%2F%2F127.0.0.1%3A8081%2Fspa%2Fcallback&scope=orders%3Aread&state=xyz&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256
          # then redeem the code (this challenge is RFC 7636's example; real apps make a fresh verifier per request):
          curl -s -d grant_type=authorization_code -d client_id=demo-spa -d code=PASTE_CODE -d redirect_uri=http://127.0.0.1:8081/spa/callback -d code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk \(issuer)/token

        Press Ctrl-C to stop.
        """
    }
}

/// Starting and stopping the authorization server, shared by `auth` and `demo`.
enum AuthRunner {
    /// Applies a `--port`: 0 picks a free port now, so that the issuer (which must be known before the server
    /// starts) can name it.
    static func overridePort(_ configuration: inout AuthServerConfiguration, port: Int, forceLoopbackIssuer: Bool = false) throws {
        guard (0...65535).contains(port) else { throw ValidationError("port must be between 0 and 65535") }
        let resolved = port == 0 ? try FreePort.find(host: configuration.listen.host) : port
        configuration.listen.port = resolved
        if forceLoopbackIssuer || configuration.isLoopbackHTTPIssuer {
            configuration.issuer = "http://127.0.0.1:\(resolved)"
        }
    }

    /// Opens the store and keys, registers configured clients and users, and returns the services to run plus the
    /// store (closed by the caller after the services stop).
    static func prepare(configuration: AuthServerConfiguration, dataDirectory: String, logger: Logger, onReady: @escaping @Sendable (String) -> Void) async throws -> (services: [any Service], store: any AuthStore) {
        // The data directory holds the signing keys whichever store is used.
        try Directories.create(dataDirectory)
        let store = try await StoreOpening.open(configuration.storage, dataDirectory: dataDirectory, logger: logger)
        do {
            let keys = KeyManager.forServer(configuration, dataDirectory: dataDirectory, logger: logger)
            try await keys.reload()
            let metrics = AuthMetrics()
            let accessLog = try configuration.accessLog.map { try AccessLogWriter(path: $0.path) }
            let tracing = ServerTracing(configuration.tracing, defaultServiceName: "gatehouse-auth", logger: logger)
            let server = try AuthorizationServer(
                configuration: configuration, store: InstrumentedAuthStore(store, metrics: metrics), keys: keys, logger: logger, metrics: metrics,
                accessLog: accessLog, tracer: tracing.exportingTracer,
                // A store that replicas share keeps the browser sessions too, so a sign-in survives landing on another.
                loginState: store as? any LoginStateStore,
                // And the login throttle's counters: failed guesses at every replica count together.
                loginThrottle: store as? any LoginThrottleStore
            )
            try await server.registerConfiguredClientsAndUsers()
            let issuer = configuration.issuer
            let app = server.application(host: configuration.listen.host, port: configuration.listen.port) { port in
                var line = "{\"event\":\"listening\",\"service\":\"auth\",\"address\":\"\(configuration.listen.host)\","
                line += "\"port\":\(port),\"issuer\":\"\(issuer)\"}"
                print(line)
                flushStandardOutput()
                logger.notice("authorization server listening", metadata: ["issuer": "\(issuer)", "port": "\(port)"])
                onReady(issuer)
            }
            var services: [any Service] = [app, AuthMaintenanceService(server: server), KeyRefreshService(keys: keys, interval: .seconds(configuration.signing.rescanInterval))]
            if let admin = configuration.admin {
                services.append(
                    AuthAdminServer(host: admin.host, port: admin.port, server: server, logger: logger) { port in
                        print("{\"event\":\"listening\",\"service\":\"auth-admin\",\"port\":\(port)}")
                        flushStandardOutput()
                    }
                )
            }
            if accessLog != nil { services.append(AccessLogReopenService(logger: logger)) }
            if let exporter = tracing.exporter { services.append(exporter) }
            return (services, store)
        } catch {
            try? await store.close()
            throw error
        }
    }

    static func run(configuration: AuthServerConfiguration, dataDirectory: String, logger: Logger, onReady: @escaping @Sendable (String) -> Void) async throws {
        let (services, store) = try await prepare(configuration: configuration, dataDirectory: dataDirectory, logger: logger, onReady: onReady)
        try await runGroup(services, logger: logger, store: store)
    }

    /// Runs services until SIGTERM/SIGINT, then closes the store.
    static func runGroup(_ services: [any Service], logger: Logger, store: any AuthStore) async throws {
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            AccessLogWriter.closeAll()
            try? await store.close()
            throw error
        }
        // Every request has been answered: the access logs write what they hold and close.
        AccessLogWriter.closeAll()
        logger.notice("stopped")
        try await store.close()
    }
}

func bootstrapLogging(_ options: LoggingOptions) throws -> Logger {
    guard let level = Logger.Level(rawValue: options.logLevel.lowercased()) else {
        throw ValidationError("unknown log level '\(options.logLevel)'")
    }
    JSONLogHandler.bootstrap(level: level)
    return Logger(label: "gatehouse")
}

func loadConfiguration(_ file: String) throws -> AuthServerConfiguration {
    // A ConfigurationError prints as "Error: FILE: key.path: reason" and exits 1, without the usage text.
    try AuthServerConfiguration.load(file: file, environment: Environment.variables())
}
