import Foundation
import GatehouseTokens
import Yams

/// The OAuth 2.0 grants a client may be registered for.
public enum GrantType: String, Sendable, CaseIterable, Hashable {
    case authorizationCode = "authorization_code"
    case implicit = "implicit"
    case password = "password"
    case clientCredentials = "client_credentials"
    case refreshToken = "refresh_token"
    /// RFC 8693 token exchange: an opaque access token in, its signed JWT out (the gateway's call).
    case tokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
}

/// Whether a client can keep a secret (RFC 6749 §2.1).
public enum ClientType: String, Sendable, Hashable {
    case confidential
    case `public`
}

/// What kind of application a client is (the `application_type` of OpenID Connect Dynamic Client Registration).
public enum ApplicationType: String, Sendable, Hashable {
    /// Runs on the user's device and receives redirects on a loopback port it picks at run time (RFC 8252 §7.3):
    /// a loopback redirect URI then matches at any port.
    case native
    /// A browser or server application: redirect URIs match exactly, port included.
    case web
}

/// The access tokens the token endpoint issues to a client (Hydra's per-client access-token strategy).
public enum AccessTokenFormat: String, Sendable, Hashable {
    /// Random, recorded tokens that resource servers introspect (or the gateway exchanges). The default.
    case opaque
    /// RFC 9068 JWT access tokens (`typ: at+jwt`) signed with the server's keys, verifiable with the JWKS.
    case jwt
}

/// A client secret as configured: plaintext (hashed before it is stored) or already hashed.
public enum ClientSecret: Sendable, Equatable {
    case plaintext(String)
    /// Lower-case hex SHA-256 of the secret.
    case sha256Hex(String)

    /// Plaintext secrets below this estimate are refused outside loopback issuers and warned about on them.
    public static let minimumBits = 128

    /// Estimated bits of a plaintext secret: length × log2(alphabet), the alphabet being hex when every character
    /// is a hex digit, else the union of the classes present (lower 26, upper 26, digits 10, other printable 33).
    /// An upper bound: it catches short and word-like secrets (`demo-service-secret` ≈ 111), not every patterned
    /// one; `openssl rand -hex 16` (128) and `-base64 32` (≈ 260) pass. Nil for a hashed secret (unknown).
    public var estimatedBits: Int? {
        guard case .plaintext(let text) = self else { return nil }
        let bytes = Array(text.utf8)
        let isHex = bytes.allSatisfy { (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) }
        var alphabet = 0
        if isHex {
            alphabet = 16
        } else {
            if bytes.contains(where: { (97...122).contains($0) }) { alphabet += 26 }
            if bytes.contains(where: { (65...90).contains($0) }) { alphabet += 26 }
            if bytes.contains(where: { (48...57).contains($0) }) { alphabet += 10 }
            if bytes.contains(where: { !(97...122).contains($0) && !(65...90).contains($0) && !(48...57).contains($0) }) { alphabet += 33 }
        }
        guard alphabet > 1 else { return 0 }
        return Int(Double(bytes.count) * log2(Double(alphabet)))
    }
}

/// A client registered from the configuration file.
public struct ClientRegistration: Sendable, Equatable {
    public var id: String
    public var name: String
    public var type: ClientType
    public var secret: ClientSecret?
    public var grants: Set<GrantType>
    public var scopes: [String]
    public var redirectURIs: [String]
    /// `aud` of JWTs issued for this client's tokens; empty means the server's default audience.
    public var audiences: [String]
    /// Whether the client may call the introspection endpoint (resource servers, the gateway).
    public var mayIntrospect: Bool
    /// `native` lets a loopback redirect URI match at any port (RFC 8252 §7.3). Default `.web`: exact match.
    public var applicationType: ApplicationType
    /// The operator's own application. A public client's remembered consent is used only when it is first-party:
    /// anyone can present a public client's id, so for any other public client the user is asked every time.
    /// Default false.
    public var firstParty: Bool

    /// The scope a request without `scope` gets (a subset of `scopes`). Default empty: such a request is refused
    /// with `invalid_scope`, so that no client gets every scope it may have by leaving the parameter out.
    public var defaultScopes: [String]
    /// The access tokens the token endpoint issues to this client. Default `.opaque`.
    public var accessTokenFormat: AccessTokenFormat

    public init(
        id: String, name: String? = nil, type: ClientType, secret: ClientSecret?, grants: Set<GrantType>, scopes: [String], redirectURIs: [String], audiences: [String] = [],
        mayIntrospect: Bool = false, defaultScopes: [String] = [], accessTokenFormat: AccessTokenFormat = .opaque, applicationType: ApplicationType = .web,
        firstParty: Bool = false
    ) {
        self.id = id
        self.name = name ?? id
        self.type = type
        self.secret = secret
        self.grants = grants
        self.scopes = scopes
        self.redirectURIs = redirectURIs
        self.audiences = audiences
        self.mayIntrospect = mayIntrospect
        self.applicationType = applicationType
        self.firstParty = firstParty
        self.defaultScopes = defaultScopes
        self.accessTokenFormat = accessTokenFormat
    }
}

/// A user password as configured: plaintext (bcrypt-hashed before it is stored) or a bcrypt hash.
public enum UserPassword: Sendable, Equatable {
    case plaintext(String)
    case bcrypt(String)
}

/// A user registered from the configuration file.
public struct UserRegistration: Sendable, Equatable {
    public var username: String
    public var password: UserPassword

    public init(username: String, password: UserPassword) {
        self.username = username
        self.password = password
    }
}

/// Everything the authorization server reads from its YAML file. Every field has a documented default.
public struct AuthServerConfiguration: Sendable, Equatable {
    /// Where the server listens.
    public struct Listen: Sendable, Equatable {
        /// Default `127.0.0.1`.
        public var host: String = "127.0.0.1"
        /// Default `9000`.
        public var port: Int = 9000
        /// Seconds from a request's first byte within which its head must be complete; the connection is closed
        /// otherwise (slowloris). Default 10 s, at most 30 s.
        public var headerReadTimeout: Int = 10
        /// Seconds a connection with no request in progress (or whose request body stopped arriving) stays open
        /// without a byte. Default 60 s.
        public var idleTimeout: Int = 60
        public init(host: String = "127.0.0.1", port: Int = 9000, headerReadTimeout: Int = 10, idleTimeout: Int = 60) {
            self.host = host
            self.port = port
            self.headerReadTimeout = headerReadTimeout
            self.idleTimeout = idleTimeout
        }
    }

    /// Lifetimes in seconds.
    public struct Tokens: Sendable, Equatable {
        /// Default 1 hour.
        public var accessTokenLifetime: Int = 3600
        /// Implicit-grant access tokens travel in a URL fragment, so they live shorter. Default 15 minutes.
        public var implicitAccessTokenLifetime: Int = 900
        /// Default 60 seconds.
        public var authorizationCodeLifetime: Int = 60
        /// A refresh token unused for this long expires. Default 14 days.
        public var refreshTokenIdleLifetime: Int = 14 * 86400
        /// No refresh token of a family outlives this, however often it is rotated. Default 90 days.
        public var refreshTokenAbsoluteLifetime: Int = 90 * 86400
        /// A rotated refresh token presented again within this period still succeeds (concurrent refreshes).
        /// Default 5 seconds.
        public var refreshTokenReuseGrace: Int = 5
        /// Default `aud` of JWT access tokens. Default `gatehouse`.
        public var jwtAudience: String = "gatehouse"
        /// A JWT access token lives at most this long, and never longer than the opaque token it stands for.
        /// Default 1 hour.
        public var jwtMaxLifetime: Int = 3600
        /// Token exchange returns the JWT it minted for the same subject token, caller and scope for this long
        /// (the subject token is still checked on every call). 0 signs every time. Default 30 s.
        public var exchangeReusePeriod: Int = 30
        /// The JWT token exchange mints for the gateway's backends lives at most this long (and never longer than
        /// the subject token or `jwtMaxLifetime`): revoking the opaque token takes effect at the backends within
        /// this lifetime plus the gateway's cache bound. At least `exchangeReusePeriod`. Default 120 s.
        public var exchangeJWTLifetime: Int = 120
        public init() {}
    }

    /// JWT signing keys.
    public struct Signing: Sendable, Equatable {
        /// Default ES256.
        public var algorithm: String = "ES256"
        /// Key directory, relative to the data directory. Default `keys`.
        public var keyDirectory: String = "keys"
        /// `Cache-Control: max-age` of the JWKS; a new key signs only after this (plus the rescan interval). Default 5 min.
        public var jwksMaxAge: Int = 300
        /// How often the server re-reads the key directory. Default 5 s.
        public var rescanInterval: Int = 5
        /// Automatic rotation period; nil rotates only with `gatehouse keys rotate`.
        public var rotationPeriod: Int?
        public init() {}
    }

    /// PKCE policy.
    public struct PKCEPolicy: Sendable, Equatable {
        /// Public clients always need PKCE; confidential ones too unless this is false. Default true.
        public var requireForConfidentialClients: Bool = true
        public init(requireForConfidentialClients: Bool = true) {
            self.requireForConfidentialClients = requireForConfidentialClients
        }
    }

    /// Sign-in policy: throttling, hashing and sessions.
    public struct Login: Sendable, Equatable {
        /// Failures allowed before each further attempt must wait. Default 5.
        public var maxFailuresBeforeDelay: Int = 5
        /// The first delay; it doubles with each further failure. Default 1 second.
        public var baseDelay: Int = 1
        /// The delay never grows past this. Default 15 minutes.
        public var maxDelay: Int = 900
        /// Failures older than this are forgotten. Default 15 minutes.
        public var failureWindow: Int = 900
        /// bcrypt cost for stored passwords. Default 10.
        public var bcryptCost: Int = 10
        /// Sign-in sessions last this long. Default 8 hours.
        public var sessionLifetime: Int = 8 * 3600
        /// Threads that hash passwords, in a pool of their own (never the one SQLite runs on). bcrypt at cost 10
        /// holds a thread for tens of milliseconds, so one thread checks roughly 15–20 passwords a second. Default 1.
        public var hashingThreads: Int = 1
        /// Password checks that may wait for a hashing thread; past it a sign-in is refused at once with 503 and
        /// `Retry-After` instead of queueing longer. Default 32 (about 2 s of waiting at cost 10 on one thread).
        public var hashingQueue: Int = 32
        /// Signed-in browser sessions kept at most; past it the oldest is dropped. Default 200,000.
        public var maxSessions: Int = 200_000
        /// Anonymous browser sessions (one per browser that opened `/authorize` and has not signed in) kept at most,
        /// apart from the signed-in ones: past it the oldest anonymous one is dropped, never a signed-in one. They
        /// live 15 min (the pending request they carry lives 10). Default 50,000.
        public var maxAnonymousSessions: Int = 50_000
        public init() {}
    }

    /// The issuer identifier (RFC 8414): an https URL, or http on loopback for development.
    public var issuer: String
    public var listen: Listen
    /// Data directory from the file; the command line's `--data-dir` takes precedence. Default `./gatehouse-data`.
    public var dataDirectory: String?
    public var storage: Storage
    public var tokens: Tokens
    public var pkce: PKCEPolicy
    public var login: Login
    public var signing: Signing = .init()
    /// Peers whose `X-Forwarded-For` is believed: behind a reverse proxy every sign-in comes from the proxy's
    /// address, so the per-address login throttle would put every user under one key. The client's address is
    /// the last hop of `X-Forwarded-For` that is not itself trusted. Default none (the socket's peer is the client).
    public var trustedProxies: [CIDR] = []
    /// `tracing:` (`sample_ratio`, `otlp_endpoint`, `service_name`; see `TracingConfiguration`).
    public var tracing: TracingConfiguration = .init()
    public var clients: [ClientRegistration]
    public var users: [UserRegistration]
    /// `admin: {host, port}`: the admin listener (`/metrics`, `/healthz`, `/readyz`), never on the public
    /// listener. Default nil (none); a present section defaults to 127.0.0.1:9902.
    public var admin: GatewayConfiguration.Admin?
    /// `access_log: {path: stdout | FILE}`: one JSON line per request. Default nil (none).
    public var accessLog: AccessLogSettings?

    public init(
        issuer: String,
        listen: Listen = .init(),
        dataDirectory: String? = nil,
        storage: Storage = .init(),
        tokens: Tokens = .init(),
        pkce: PKCEPolicy = .init(),
        login: Login = .init(),
        clients: [ClientRegistration] = [],
        users: [UserRegistration] = []
    ) {
        self.issuer = issuer
        self.listen = listen
        self.dataDirectory = dataDirectory
        self.storage = storage
        self.tokens = tokens
        self.pkce = pkce
        self.login = login
        self.clients = clients
        self.users = users
    }

    /// Warnings to log at start-up (no secret in them): plaintext client secrets below `ClientSecret.minimumBits`
    /// (accepted only on a loopback issuer), and clients that enable the implicit or password grant.
    public var startupWarnings: [String] {
        var warnings: [String] = []
        for client in clients {
            if let bits = client.secret?.estimatedBits, bits < ClientSecret.minimumBits {
                warnings.append("client '\(client.id)': its secret has about \(bits) bits of entropy (< \(ClientSecret.minimumBits)); use a random one (openssl rand -base64 32)")
            }
            if client.grants.contains(.implicit) {
                warnings.append("client '\(client.id)' enables the implicit grant, which RFC 9700 §2.1.2 says should not be used (tokens in the URL fragment, no sender constraint); prefer authorization_code with PKCE")
            }
            if client.grants.contains(.password) {
                warnings.append("client '\(client.id)' enables the resource owner password credentials grant, which RFC 9700 §2.4 says must not be used (the client sees the password, no MFA); prefer authorization_code with PKCE")
            }
        }
        return warnings
    }

    /// Whether the issuer is plain http on a loopback address (development): cookies may then drop `Secure`.
    public var isLoopbackHTTPIssuer: Bool {
        guard let url = ParsedURL(issuer), url.scheme == "http" else { return false }
        return url.isLoopback
    }

    /// Loads and validates a file completely; the error names the file and the key.
    public static func load(file: String, environment: [String: String]) throws -> AuthServerConfiguration {
        let (text, directory) = try ConfigurationFile.read(file)
        return try parse(yaml: text, file: file, environment: environment, baseDirectory: directory)
    }

    /// Parses and validates YAML text.
    public static func parse(yaml: String, file: String = "<string>", environment: [String: String] = [:], baseDirectory: String = ".") throws -> AuthServerConfiguration {
        var root = try ConfigurationFile.root(yaml: yaml, file: file)

        let issuer = try root.requiredString("issuer")
        guard let issuerURL = ParsedURL(issuer), issuerURL.query == nil, issuerURL.fragment == nil else {
            throw root.error("issuer", "must be an absolute http(s) URL without query or fragment, got '\(issuer)'")
        }
        guard issuerURL.scheme == "https" || issuerURL.isLoopback else {
            throw root.error("issuer", "must use https (http is allowed only on a loopback address)")
        }
        guard !issuer.hasSuffix("/") else { throw root.error("issuer", "must not end with '/'") }

        var configuration = AuthServerConfiguration(issuer: issuer)

        var listen = try root.mapping("listen")
        if let host = try listen.string("host") { configuration.listen.host = host }
        if let port = try listen.int("port", range: 0...65535) { configuration.listen.port = port }
        if let value = try listen.duration("header_read_timeout", minimum: 1) {
            guard value <= 30 else { throw listen.error("header_read_timeout", "must be at most 30s: a longer one lets slow clients hold connections") }
            configuration.listen.headerReadTimeout = value
        }
        if let value = try listen.duration("idle_timeout", minimum: 1) {
            guard value <= 3600 else { throw listen.error("idle_timeout", "must be at most 1h") }
            configuration.listen.idleTimeout = value
        }
        try listen.finish()

        configuration.dataDirectory = try root.string("data_dir")

        var storage = try root.mapping("storage")
        configuration.storage = try Storage.parse(&storage, environment: environment, baseDirectory: baseDirectory)

        var tokens = try root.mapping("tokens")
        if let value = try tokens.duration("access_token_lifetime", minimum: 1) { configuration.tokens.accessTokenLifetime = value }
        if let value = try tokens.duration("implicit_access_token_lifetime", minimum: 1) { configuration.tokens.implicitAccessTokenLifetime = value }
        if let value = try tokens.duration("authorization_code_lifetime", minimum: 1) {
            guard value <= 600 else { throw tokens.error("authorization_code_lifetime", "must be at most 10m (RFC 6749 §4.1.2)") }
            configuration.tokens.authorizationCodeLifetime = value
        }
        if let value = try tokens.duration("refresh_token_idle_lifetime", minimum: 1) { configuration.tokens.refreshTokenIdleLifetime = value }
        if let value = try tokens.duration("refresh_token_absolute_lifetime", minimum: 1) { configuration.tokens.refreshTokenAbsoluteLifetime = value }
        if let value = try tokens.string("jwt_audience") { configuration.tokens.jwtAudience = value }
        if let value = try tokens.duration("jwt_max_lifetime", minimum: 1) { configuration.tokens.jwtMaxLifetime = value }
        if let value = try tokens.duration("exchange_reuse_period", minimum: 0) {
            guard value <= 300 else { throw tokens.error("exchange_reuse_period", "must be at most 5m") }
            configuration.tokens.exchangeReusePeriod = value
        }
        if let value = try tokens.duration("exchange_jwt_lifetime", minimum: 1) { configuration.tokens.exchangeJWTLifetime = value }
        if let value = try tokens.duration("refresh_token_reuse_grace") {
            guard value <= 60 else { throw tokens.error("refresh_token_reuse_grace", "must be at most 60s: a longer grace weakens reuse detection") }
            configuration.tokens.refreshTokenReuseGrace = value
        }
        try tokens.finish()
        if configuration.tokens.exchangeJWTLifetime < configuration.tokens.exchangeReusePeriod {
            throw ConfigurationError(code: .invalidValue, file: file, keyPath: "tokens.exchange_jwt_lifetime", reason: "must be at least exchange_reuse_period, or a reused JWT could be handed out expired")
        }
        if configuration.tokens.refreshTokenIdleLifetime > configuration.tokens.refreshTokenAbsoluteLifetime {
            throw ConfigurationError(code: .invalidValue, file: file, keyPath: "tokens.refresh_token_idle_lifetime", reason: "must not exceed refresh_token_absolute_lifetime")
        }

        var signing = try root.mapping("signing")
        if let value = try signing.string("algorithm") {
            guard ["ES256", "RS256", "EdDSA"].contains(value) else { throw signing.error("algorithm", "expected ES256, RS256 or EdDSA, got '\(value)'") }
            configuration.signing.algorithm = value
        }
        if let value = try signing.string("key_directory") { configuration.signing.keyDirectory = value }
        if let value = try signing.duration("jwks_max_age", minimum: 0) {
            guard value <= 86400 else { throw signing.error("jwks_max_age", "must be at most 1d") }
            configuration.signing.jwksMaxAge = value
        }
        if let value = try signing.duration("rescan_interval", minimum: 1) { configuration.signing.rescanInterval = value }
        if let value = try signing.duration("rotation_period", minimum: 0) { configuration.signing.rotationPeriod = value == 0 ? nil : value }
        try signing.finish()
        if let period = configuration.signing.rotationPeriod, period <= configuration.signing.jwksMaxAge + configuration.signing.rescanInterval {
            throw ConfigurationError(code: .invalidValue, file: file, keyPath: "signing.rotation_period", reason: "must be longer than jwks_max_age plus rescan_interval, or a new key would be due before the last one signs")
        }

        var pkce = try root.mapping("pkce")
        if let value = try pkce.bool("require_for_confidential_clients") { configuration.pkce.requireForConfidentialClients = value }
        try pkce.finish()

        var login = try root.mapping("login")
        if let value = try login.int("max_failures_before_delay", range: 1...1000) { configuration.login.maxFailuresBeforeDelay = value }
        if let value = try login.duration("base_delay", minimum: 1) { configuration.login.baseDelay = value }
        if let value = try login.duration("max_delay", minimum: 1) { configuration.login.maxDelay = value }
        if let value = try login.duration("failure_window", minimum: 1) { configuration.login.failureWindow = value }
        if let value = try login.int("bcrypt_cost", range: 4...31) { configuration.login.bcryptCost = value }
        if let value = try login.duration("session_lifetime", minimum: 60) { configuration.login.sessionLifetime = value }
        if let value = try login.int("hashing_threads", range: 1...64) { configuration.login.hashingThreads = value }
        if let value = try login.int("hashing_queue", range: 0...10_000) { configuration.login.hashingQueue = value }
        if let value = try login.int("max_sessions", range: 1...10_000_000) { configuration.login.maxSessions = value }
        if let value = try login.int("max_anonymous_sessions", range: 1...10_000_000) { configuration.login.maxAnonymousSessions = value }
        try login.finish()

        for (index, text) in (try root.stringList("trusted_proxies") ?? []).enumerated() {
            guard let cidr = CIDR.parse(text) else {
                throw ConfigurationError(
                    code: .invalidValue, file: file, keyPath: "trusted_proxies[\(index)]",
                    reason: "'\(text)' is not a CIDR block: expected an IPv4 or IPv6 address with an optional /prefix length, host bits zero (e.g. 10.0.0.0/8, ::1/128)"
                )
            }
            configuration.trustedProxies.append(cidr)
        }

        var clientIDs = Set<String>()
        var weakInlineSecrets: [(index: Int, bits: Int)] = []
        for var client in try root.list("clients") ?? [] {
            // An inline secret is a scalar in the file itself (not {env} or {file}): checked for strength below.
            let inlineSecret: Bool = if case .scalar = client.node("secret") { true } else { false }
            let registration = try parseClient(&client, environment: environment, baseDirectory: baseDirectory)
            guard clientIDs.insert(registration.id).inserted else {
                throw client.error("id", "client '\(registration.id)' is registered twice")
            }
            try client.finish()
            if inlineSecret, let bits = registration.secret?.estimatedBits, bits < ClientSecret.minimumBits {
                weakInlineSecrets.append((configuration.clients.count, bits))
            }
            configuration.clients.append(registration)
        }

        var usernames = Set<String>()
        for var user in try root.list("users") ?? [] {
            let username = try user.requiredString("username")
            guard usernames.insert(username).inserted else { throw user.error("username", "user '\(username)' is registered twice") }
            let plaintext = try user.secret("password", environment: environment, baseDirectory: baseDirectory)
            let hash = try user.string("password_bcrypt")
            switch (plaintext, hash) {
            case (let password?, nil): configuration.users.append(.init(username: username, password: .plaintext(password)))
            case (nil, let hash?):
                guard hash.hasPrefix("$2") else { throw user.error("password_bcrypt", "expected a bcrypt hash ($2a$/$2b$/$2y$)") }
                configuration.users.append(.init(username: username, password: .bcrypt(hash)))
            case (nil, nil): throw user.error("password", "a password (or password_bcrypt) is required", code: .missingSecret)
            case (_?, _?): throw user.error("password", "give password or password_bcrypt, not both")
            }
            try user.finish()
        }

        configuration.admin = try root.adminListener(defaultPort: 9902)
        configuration.accessLog = try root.accessLog(baseDirectory: baseDirectory)

        configuration.tracing = try TracingConfiguration.parseSection(&root, gateway: false)
        try root.finish()
        // Weak inline secrets are refused unless the issuer is loopback (development), where they only warn.
        if !issuerURL.isLoopback, let weak = weakInlineSecrets.first {
            throw ConfigurationError(
                code: .invalidValue, file: file, keyPath: "clients[\(weak.index)].secret",
                reason: "an inline secret of about \(weak.bits) bits of entropy; at least \(ClientSecret.minimumBits) are needed outside a loopback issuer (e.g. openssl rand -base64 32, or {env: NAME})"
            )
        }
        return configuration
    }

    private static func parseClient(_ client: inout YAMLMappingReader, environment: [String: String], baseDirectory: String) throws -> ClientRegistration {
        let id = try client.requiredString("id")
        guard id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
            throw client.error("id", "must be visible ASCII without ':' (it travels in HTTP Basic credentials)")
        }
        let name = try client.string("name")
        let typeText = try client.string("type") ?? "confidential"
        guard let type = ClientType(rawValue: typeText) else { throw client.error("type", "expected confidential or public, got '\(typeText)'") }

        let plaintext = try client.secret("secret", environment: environment, baseDirectory: baseDirectory)
        let hashed = try client.string("secret_sha256")
        var secret: ClientSecret?
        switch (plaintext, hashed) {
        case (let value?, nil): secret = .plaintext(value)
        case (nil, let hex?):
            guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
                throw client.error("secret_sha256", "expected 64 lower-case hex characters")
            }
            secret = .sha256Hex(hex)
        case (nil, nil): secret = nil
        case (_?, _?): throw client.error("secret", "give secret or secret_sha256, not both")
        }
        if type == .confidential && secret == nil {
            throw client.error("secret", "a confidential client needs a secret (inline, {env: NAME}, {file: PATH} or secret_sha256)", code: .missingSecret)
        }
        if type == .public && secret != nil {
            throw client.error("secret", "a public client has no secret")
        }

        var grants = Set<GrantType>()
        let grantNames = try client.stringList("grants") ?? []
        guard !grantNames.isEmpty else { throw client.error("grants", "list at least one grant", code: .missingKey) }
        for (index, name) in grantNames.enumerated() {
            guard let grant = GrantType(rawValue: name) else {
                let known = GrantType.allCases.map(\.rawValue).joined(separator: ", ")
                throw ConfigurationError(code: .invalidValue, file: client.file, keyPath: "\(client.keyPath("grants"))[\(index)]", reason: "unknown grant '\(name)' (known: \(known))")
            }
            grants.insert(grant)
        }
        if type == .public {
            for grant in [GrantType.password, .clientCredentials] where grants.contains(grant) {
                throw client.error("grants", "a public client cannot use \(grant.rawValue)")
            }
        }

        let scopes = try client.stringList("scopes") ?? []
        for (index, scope) in scopes.enumerated() where !ScopeSyntax.isValidToken(scope) {
            throw ConfigurationError(code: .invalidValue, file: client.file, keyPath: "\(client.keyPath("scopes"))[\(index)]", reason: "'\(scope)' is not a valid scope token (RFC 6749 §3.3)")
        }

        let defaultScopes = try client.stringList("default_scopes") ?? []
        for (index, scope) in defaultScopes.enumerated() where !scopes.contains(scope) {
            throw ConfigurationError(code: .invalidValue, file: client.file, keyPath: "\(client.keyPath("default_scopes"))[\(index)]", reason: "'\(scope)' is not one of the client's scopes")
        }

        let redirectURIs = try client.stringList("redirect_uris") ?? []
        for (index, uri) in redirectURIs.enumerated() {
            guard let url = ParsedURL(uri), url.fragment == nil else {
                throw ConfigurationError(code: .invalidValue, file: client.file, keyPath: "\(client.keyPath("redirect_uris"))[\(index)]", reason: "'\(uri)' is not an absolute URL without a fragment")
            }
            if url.scheme == "http" && !url.isLoopback {
                throw ConfigurationError(code: .invalidValue, file: client.file, keyPath: "\(client.keyPath("redirect_uris"))[\(index)]", reason: "'\(uri)': plain http is allowed only for loopback redirect URIs")
            }
        }
        if (grants.contains(.authorizationCode) || grants.contains(.implicit)) && redirectURIs.isEmpty {
            throw client.error("redirect_uris", "authorization_code and implicit clients need at least one redirect URI", code: .missingKey)
        }
        let audiences = try client.stringList("audience") ?? []
        let mayIntrospect = try client.bool("introspect") ?? false
        if type == .public && (mayIntrospect || grants.contains(.tokenExchange)) {
            throw client.error(mayIntrospect ? "introspect" : "grants", "a public client cannot introspect or exchange tokens")
        }
        let applicationTypeText = try client.string("application_type") ?? ApplicationType.web.rawValue
        guard let applicationType = ApplicationType(rawValue: applicationTypeText) else {
            throw client.error("application_type", "expected native or web, got '\(applicationTypeText)'")
        }
        let firstParty = try client.bool("first_party") ?? false
        let formatText = try client.string("access_token_format") ?? "opaque"
        guard let accessTokenFormat = AccessTokenFormat(rawValue: formatText) else {
            throw client.error("access_token_format", "expected jwt or opaque, got '\(formatText)'")
        }
        return ClientRegistration(
            id: id, name: name, type: type, secret: secret, grants: grants, scopes: scopes, redirectURIs: redirectURIs, audiences: audiences,
            mayIntrospect: mayIntrospect, defaultScopes: defaultScopes, accessTokenFormat: accessTokenFormat, applicationType: applicationType, firstParty: firstParty
        )
    }
}
