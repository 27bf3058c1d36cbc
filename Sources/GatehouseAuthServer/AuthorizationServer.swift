import GatehouseConfiguration
import GatehouseObservability
import GatehouseStore
import GatehouseTokens
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The OAuth 2.0 authorization server: owns the grant logic, the sign-in state and the HTTP routes.
public final class AuthorizationServer: Sendable {
    public let configuration: AuthServerConfiguration
    let store: any AuthStore
    let clock: any AuthClock
    let logger: Logger
    let directory: ClientDirectory
    let tokens: TokenService
    let flow: AuthorizationFlow
    let sessions: SessionStore
    let pending: PendingAuthorizations
    /// The shared store of sessions and pending requests, when replicas share one (else they are in memory).
    let loginState: (any LoginStateStore)?
    /// Where the login throttle's counters are kept when replicas share them (else in this process).
    let loginThrottle: (any LoginThrottleStore)?
    let passwords: PasswordHasher
    let pages: Pages
    let metadataJSON: NIOLockedValueBox<String>
    /// Signing keys (JWT access tokens, JWT introspection responses) and the JWKS.
    public let keys: KeyManager
    /// The Prometheus metrics (served by `AuthAdminServer`).
    public let metrics: AuthMetrics
    /// The access log (nil: none).
    public let accessLog: AccessLogWriter?
    /// Server spans per request (nil: no tracing).
    let tracer: GatehouseTracer?

    /// Name of the browser session cookie on a loopback http issuer.
    public static let sessionCookie = "gatehouse_session"
    /// Name of the browser session cookie on an https issuer (`__Host-`: Secure, `Path=/`, no `Domain`).
    public static let hostSessionCookie = "__Host-gatehouse_session"

    /// - Parameters:
    ///   - passwordAlgorithm: how passwords are hashed (bcrypt; tests inject one that counts or blocks).
    ///   - passwordHashingPool: a pool of `login.hashing_threads` threads to hash on instead of the process-wide one.
    ///   - loginState: where browser sessions and pending requests live when replicas share a database (the
    ///     PostgreSQL store); nil keeps them in this process.
    ///   - loginThrottle: where the login throttle counts failures when replicas share a database (the PostgreSQL
    ///     store), so that every replica's failures count together; nil keeps the counters in this process.
    public init(
        configuration: AuthServerConfiguration, store: any AuthStore, keys: KeyManager, clock: any AuthClock = SystemAuthClock(), logger: Logger,
        passwordAlgorithm: any PasswordAlgorithm = BcryptAlgorithm(), passwordHashingPool: NIOThreadPool? = nil,
        metrics: AuthMetrics = AuthMetrics(), accessLog: AccessLogWriter? = nil, tracer: GatehouseTracer? = nil,
        loginState: (any LoginStateStore)? = nil, loginThrottle: (any LoginThrottleStore)? = nil
    ) throws {
        self.loginState = loginState
        self.metrics = metrics
        self.accessLog = accessLog
        self.tracer = tracer
        self.keys = keys
        self.configuration = configuration
        self.store = store
        self.clock = clock
        self.logger = logger
        self.directory = ClientDirectory(store: store, clock: clock)
        self.passwords = PasswordHasher(
            cost: configuration.login.bcryptCost, threads: configuration.login.hashingThreads, maxQueued: configuration.login.hashingQueue,
            algorithm: passwordAlgorithm, pool: passwordHashingPool
        )
        let policy = LoginThrottle.Policy(
            maxFailuresBeforeDelay: configuration.login.maxFailuresBeforeDelay, baseDelay: configuration.login.baseDelay,
            maxDelay: configuration.login.maxDelay, failureWindow: configuration.login.failureWindow
        )
        self.loginThrottle = loginThrottle
        let throttle = loginThrottle.map { LoginThrottling(policy: policy, shared: $0) } ?? LoginThrottling(policy: policy)
        self.tokens = TokenService(configuration: configuration, store: store, clock: clock, directory: directory, passwords: passwords, throttle: throttle, keys: keys, logger: logger)
        self.pending = PendingAuthorizations(maxAnonymous: configuration.login.maxAnonymousSessions, shared: loginState)
        self.flow = AuthorizationFlow(configuration: configuration, store: store, clock: clock, directory: directory, pending: pending, logger: logger)
        self.sessions = SessionStore(
            lifetime: configuration.login.sessionLifetime, maxSignedIn: configuration.login.maxSessions, maxAnonymous: configuration.login.maxAnonymousSessions,
            shared: loginState
        )
        self.pages = try Pages()
        self.metadataJSON = NIOLockedValueBox(Self.metadata(configuration: configuration, scopes: [], algorithms: keys.signingAlgorithms))
    }

    // MARK: Registration from configuration

    /// Registers the configuration's clients and users in the store (replacing earlier copies of them) and
    /// removes configuration clients that are gone from the file. Passwords are bcrypt-hashed off the event loop.
    public func registerConfiguredClientsAndUsers() async throws {
        for warning in configuration.startupWarnings { logger.warning("\(warning)") }
        for client in configuration.clients {
            try await store.upsertClient(Self.clientRecord(client))
        }
        try await store.removeConfigurationClients(notIn: Set(configuration.clients.map(\.id)))
        for user in configuration.users {
            let existing = try await store.user(username: user.username)
            let hash: String
            switch user.password {
            case .bcrypt(let value):
                hash = value
            case .plaintext(let password):
                if let existing, try await passwords.verify(password, hash: existing.passwordHash) { continue }
                hash = try await passwords.hash(password)
            }
            try await store.upsertUser(UserRecord(id: existing?.id ?? UserRecord.newID(), username: user.username, passwordHash: hash))
        }
        directory.invalidate()
        try await refreshMetadata()
        // Made now so that the first unknown username does not pay for it (and so take longer than a known one).
        _ = try await passwords.decoyHash()
    }

    /// The stored form of a configured client.
    public static func clientRecord(_ client: ClientRegistration) -> ClientRecord {
        let secretHash: String?
        switch client.secret {
        case .plaintext(let secret): secretHash = SecureToken.hash(secret)
        case .sha256Hex(let hex): secretHash = Base64URL.encode(hexBytes(hex))
        case nil: secretHash = nil
        }
        return ClientRecord(
            id: client.id, name: client.name, type: client.type.rawValue, secretHash: secretHash,
            grants: GrantType.allCases.filter { client.grants.contains($0) }.map(\.rawValue), scopes: client.scopes,
            redirectURIs: client.redirectURIs, fromConfiguration: true, audiences: client.audiences, mayIntrospect: client.mayIntrospect,
            defaultScopes: client.defaultScopes, accessTokenFormat: client.accessTokenFormat.rawValue
        )
    }

    private static func hexBytes(_ hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        func value(_ byte: UInt8) -> UInt8 { byte <= 57 ? byte - 48 : byte - 87 }
        while let high = iterator.next(), let low = iterator.next() { bytes.append(value(high) << 4 | value(low)) }
        return bytes
    }

    // MARK: Metadata

    func refreshMetadata() async throws {
        let scopes = Set(try await store.listClients().flatMap(\.scopes)).sorted()
        let algorithms = keys.signingAlgorithms
        metadataJSON.withLockedValue { $0 = Self.metadata(configuration: configuration, scopes: scopes, algorithms: algorithms) }
    }

    /// RFC 8414 authorization server metadata.
    static func metadata(configuration: AuthServerConfiguration, scopes: [String], algorithms: [String]) -> String {
        let issuer = configuration.issuer
        var json = JSONWriter()
        json.add("issuer", issuer)
        json.add("authorization_endpoint", issuer + "/authorize")
        json.add("token_endpoint", issuer + "/token")
        json.add("introspection_endpoint", issuer + "/introspect")
        json.add("revocation_endpoint", issuer + "/revoke")
        json.add("jwks_uri", issuer + "/.well-known/jwks.json")
        json.add("scopes_supported", scopes)
        json.add("response_types_supported", ["code", "token"])
        json.add("response_modes_supported", ["query", "fragment"])
        json.add("grant_types_supported", GrantType.allCases.map(\.rawValue))
        json.add("token_endpoint_auth_methods_supported", ["client_secret_basic", "client_secret_post", "none"])
        json.add("introspection_endpoint_auth_methods_supported", ["client_secret_basic", "client_secret_post"])
        json.add("revocation_endpoint_auth_methods_supported", ["client_secret_basic", "client_secret_post", "none"])
        json.add("introspection_signing_alg_values_supported", algorithms)
        json.add("access_token_signing_alg_values_supported", algorithms)
        json.add("code_challenge_methods_supported", [PKCE.s256])
        json.add("authorization_response_iss_parameter_supported", true)
        return json.finish()
    }

    // MARK: Maintenance

    /// Deletes expired codes, tokens, sessions and pending requests, and idle login-throttle rows.
    public func purgeExpired() async {
        let now = clock.now()
        sessions.purge(now: now)
        pending.purge(now: now)
        do {
            var removed = try await store.purgeExpired(now: now)
            if let loginState {
                removed += try await loginState.purgeLoginState(now: now, maxAnonymousSessions: sessions.maxAnonymous, maxSignedInSessions: sessions.maxSignedIn)
            }
            if let loginThrottle {
                // A key idle for a whole window counts nothing any more (its failures and reservations are forgotten).
                removed += try await loginThrottle.purgeLoginThrottle(idleBefore: now - configuration.login.failureWindow)
            }
            if removed > 0 { logger.debug("purged expired rows", metadata: ["rows": "\(removed)"]) }
        } catch {
            logger.error("purge failed", metadata: ["error": "\(error)"])
        }
    }

    /// Builds the HTTP application (a `Service`). `onListening` receives the bound port.
    public func application(host: String, port: Int, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let tokens = self.tokens
        let logger = self.logger
        let metrics = self.metrics
        let accessLog = self.accessLog
        let tracer = self.tracer
        let headerReadTimeout = TimeAmount.seconds(Int64(configuration.listen.headerReadTimeout))
        let idleTimeout = TimeAmount.seconds(Int64(configuration.listen.idleTimeout))
        return Application(
            router: makeRouter(),
            server: .http1(
                configuration: .init(
                    additionalChannelHandlers: [AuthPipelineInstaller(
                            tokens: tokens, headerReadTimeout: headerReadTimeout, idleTimeout: idleTimeout, logger: logger, metrics: metrics, accessLog: accessLog,
                            tracer: tracer
                        )]
                )
            ),
            configuration: .init(address: .hostname(host, port: port), serverName: "gatehouse", backlog: 4096),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger
        )
    }
}

/// Runs the store purge on an interval until graceful shutdown.
public struct AuthMaintenanceService: Service {
    let server: AuthorizationServer
    let interval: Duration

    public init(server: AuthorizationServer, interval: Duration = .seconds(60)) {
        self.server = server
        self.interval = interval
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                await server.purgeExpired()
            }
        }
    }
}
