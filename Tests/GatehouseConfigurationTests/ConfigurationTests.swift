import GatehouseConfiguration
import Testing

@Suite struct ConfigurationTests {
    static let minimal = """
        issuer: http://127.0.0.1:9000
        clients:
          - id: svc
            secret: s3cret
            grants: [client_credentials]
            scopes: [a, b]
        users:
          - username: alice
            password: pw
        """

    @Test func parsesMinimalFileWithDefaults() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: Self.minimal)
        #expect(configuration.issuer == "http://127.0.0.1:9000")
        #expect(configuration.listen.port == 9000)
        #expect(configuration.tokens.authorizationCodeLifetime == 60)
        #expect(configuration.tokens.refreshTokenReuseGrace == 5)
        #expect(configuration.storage.synchronous == .full)
        #expect(configuration.clients == [ClientRegistration(id: "svc", type: .confidential, secret: .plaintext("s3cret"), grants: [.clientCredentials], scopes: ["a", "b"], redirectURIs: [])])
        #expect(configuration.users == [UserRegistration(username: "alice", password: .plaintext("pw"))])
        #expect(configuration.isLoopbackHTTPIssuer)
    }

    @Test func parsesTheDemoConfiguration() throws {
        let configuration = try AuthServerConfiguration.load(file: "config/demo/auth.yaml", environment: [:])
        #expect(Set(configuration.clients.map(\.id)) == ["demo-service", "demo-web", "demo-spa", "demo-jwt", "gatehouse-gateway"])
        let jwtClient = configuration.clients.first { $0.id == "demo-jwt" }
        #expect(jwtClient?.accessTokenFormat == .jwt)
        #expect(jwtClient?.audiences == ["http://127.0.0.1:8080"])
        #expect(jwtClient?.grants == [.clientCredentials])
        #expect(configuration.tokens.exchangeJWTLifetime == 120)
        let gateway = configuration.clients.first { $0.id == "gatehouse-gateway" }
        #expect(gateway?.mayIntrospect == true)
        #expect(gateway?.grants == [.tokenExchange])
        #expect(configuration.tokens.jwtAudience == "http://127.0.0.1:8080")
        #expect(configuration.clients.first { $0.id == "demo-spa" }?.type == .public)
        #expect(configuration.users.map(\.username) == ["alice", "bob"])
    }

    @Test func durations() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: """
            issuer: https://auth.example.com
            tokens: {access_token_lifetime: 2h, refresh_token_idle_lifetime: 3d, refresh_token_reuse_grace: 0, authorization_code_lifetime: 90}
            """)
        #expect(configuration.tokens.accessTokenLifetime == 7200)
        #expect(configuration.tokens.refreshTokenIdleLifetime == 3 * 86400)
        #expect(configuration.tokens.refreshTokenReuseGrace == 0)
        #expect(configuration.tokens.authorizationCodeLifetime == 90)
    }

    @Test func unknownKeyIsNamedWithItsPath() {
        let error = #expect(throws: ConfigurationError.self) {
            try AuthServerConfiguration.parse(yaml: "issuer: https://a.example\ntokens:\n  acess_token_lifetime: 1h\n", file: "auth.yaml")
        }
        #expect(error?.code == .unknownKey)
        #expect(error?.keyPath == "tokens.acess_token_lifetime")
        #expect(error?.description.hasPrefix("auth.yaml: tokens.acess_token_lifetime: unknown key") == true)
    }

    @Test func unknownKeyInsideAListItem() {
        let error = #expect(throws: ConfigurationError.self) {
            try AuthServerConfiguration.parse(yaml: """
                issuer: https://a.example
                clients:
                  - id: x
                    secret: y
                    grants: [client_credentials]
                    scope: [a]
                """)
        }
        #expect(error?.keyPath == "clients[0].scope")
    }

    @Test(arguments: [
        ("issuer: ftp://x.example", "issuer"),
        ("issuer: http://auth.example.com", "issuer"),  // http only on loopback
        ("issuer: https://a.example/?q=1", "issuer"),
        ("issuer: https://a.example\nlisten: {port: 70000}", "listen.port"),
        ("issuer: https://a.example\ntokens: {access_token_lifetime: soon}", "tokens.access_token_lifetime"),
        ("issuer: https://a.example\ntokens: {authorization_code_lifetime: 1h}", "tokens.authorization_code_lifetime"),
        ("issuer: https://a.example\nstorage: {sqlite: {synchronous: sometimes}}", "storage.sqlite.synchronous"),
        ("issuer: https://a.example\nclients: [{id: w, secret: s, grants: [authorization_code], redirect_uris: ['http://evil.example/cb']}]", "clients[0].redirect_uris[0]"),
        ("issuer: https://a.example\nclients: [{id: w, secret: s, grants: [authorization_code]}]", "clients[0].redirect_uris"),
        ("issuer: https://a.example\nclients: [{id: w, secret: s, grants: [teleport]}]", "clients[0].grants[0]"),
        ("issuer: https://a.example\nclients: [{id: p, type: public, grants: [client_credentials]}]", "clients[0].grants"),
        ("issuer: https://a.example\nclients: [{id: p, type: public, secret: x, grants: [authorization_code], redirect_uris: ['https://a.example/cb']}]", "clients[0].secret"),
        ("issuer: https://a.example\nclients: [{id: 'a:b', secret: s, grants: [client_credentials]}]", "clients[0].id"),
        ("issuer: https://a.example\nclients: [{id: a, secret: s, grants: [client_credentials]}, {id: a, secret: t, grants: [client_credentials]}]", "clients[1].id"),
        ("issuer: https://a.example\nusers: [{username: u}]", "users[0].password"),
        ("issuer: https://a.example\nsigning: {algorithm: HS256}", "signing.algorithm"),
        ("issuer: https://a.example\nsigning: {algorithm: none}", "signing.algorithm"),
        ("issuer: https://a.example\nsigning: {jwks_max_age: 5m, rotation_period: 4m}", "signing.rotation_period"),
        ("issuer: https://a.example\nsigning: {kid: x}", "signing.kid"),
        ("issuer: https://a.example\nclients: [{id: p, type: public, grants: [implicit], redirect_uris: ['https://a.example/cb'], introspect: true}]", "clients[0].introspect"),
        ("issuer: https://a.example\nclients: [{id: p, type: public, grants: ['urn:ietf:params:oauth:grant-type:token-exchange']}]", "clients[0].grants"),
    ])
    func invalidValuesAreNamed(yaml: String, keyPath: String) {
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: yaml) }
        #expect(error?.keyPath == keyPath)
    }

    @Test func signingSection() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: """
            issuer: https://a.example
            signing: {algorithm: EdDSA, jwks_max_age: 10m, rescan_interval: 2s, rotation_period: 30d, key_directory: /var/lib/keys}
            tokens: {jwt_audience: 'https://api.example', jwt_max_lifetime: 10m}
            """)
        #expect(configuration.signing.algorithm == "EdDSA")
        #expect(configuration.signing.jwksMaxAge == 600)
        #expect(configuration.signing.rescanInterval == 2)
        #expect(configuration.signing.rotationPeriod == 30 * 86400)
        #expect(configuration.signing.keyDirectory == "/var/lib/keys")
        #expect(configuration.tokens.jwtAudience == "https://api.example")
        #expect(configuration.tokens.jwtMaxLifetime == 600)
        #expect(try AuthServerConfiguration.parse(yaml: "issuer: https://a.example").signing.rotationPeriod == nil)
    }

    @Test func missingIssuer() {
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: "listen: {port: 1}") }
        #expect(error?.code == .missingKey)
        #expect(error?.keyPath == "issuer")
    }

    @Test func confidentialClientWithoutSecretIsRefused() {
        let error = #expect(throws: ConfigurationError.self) {
            try AuthServerConfiguration.parse(yaml: "issuer: https://a.example\nclients: [{id: c, grants: [client_credentials]}]")
        }
        #expect(error?.code == .missingSecret)
        #expect(error?.keyPath == "clients[0].secret")
    }

    @Test func secretsFromEnvironment() throws {
        let yaml = "issuer: https://a.example\nclients: [{id: c, secret: {env: C_SECRET}, grants: [client_credentials]}]"
        let configuration = try AuthServerConfiguration.parse(yaml: yaml, environment: ["C_SECRET": "from-env"])
        #expect(configuration.clients[0].secret == .plaintext("from-env"))
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: yaml, environment: [:]) }
        #expect(error?.code == .missingSecret)
        #expect(error?.reason.contains("C_SECRET") == true)
    }

    @Test func secretsFromFiles() throws {
        let directory = "/tmp/gatehouse-config-test-\(UInt64.random(in: 0...UInt64.max))"
        #expect(system("mkdir -p \(directory) && printf 'file-secret\\n' > \(directory)/secret") == 0)
        defer { _ = system("rm -rf \(directory)") }
        let yaml = "issuer: https://a.example\nclients: [{id: c, secret: {file: secret}, grants: [client_credentials]}]"
        let configuration = try AuthServerConfiguration.parse(yaml: yaml, baseDirectory: directory)
        #expect(configuration.clients[0].secret == .plaintext("file-secret"))
        let error = #expect(throws: ConfigurationError.self) {
            try AuthServerConfiguration.parse(yaml: yaml.replacingOccurrences("secret}", "missing}"), baseDirectory: directory)
        }
        #expect(error?.code == .missingSecret)
    }

    @Test func invalidYAML() {
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: "issuer: [unclosed") }
        #expect(error?.code == .invalidYAML)
    }

    @Test func unreadableFile() {
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.load(file: "/nonexistent/auth.yaml", environment: [:]) }
        #expect(error?.code == .unreadableFile)
        #expect(error?.file == "/nonexistent/auth.yaml")
    }

    /// Loopback is parsed as an address: names that merely start with `127.` are not loopback.
    @Test(arguments: [
        ("http://127.0.0.1:8081/cb", true), ("http://127.1.2.3/", true), ("http://[::1]:9000/", true), ("http://[0:0:0:0:0:0:0:1]/", true),
        ("http://localhost:9000/", true), ("http://LOCALHOST/", true), ("http://[::ffff:127.0.0.1]/", true),
        ("http://127.attacker.example/", false), ("http://127.0.0.1.nip.io/", false), ("http://127.0.0.1.attacker.example:9000/", false),
        ("http://128.0.0.1/", false), ("http://127.0.0.256/", false), ("http://0127.0.0.1/", false), ("http://127.1/", false),
        ("http://[::2]/", false), ("http://[::1/", false), ("http://localhost.attacker.example/", false),
    ])
    func loopbackIsAnAddressNotAPrefix(url: String, loopback: Bool) {
        #expect((ParsedURL(url)?.isLoopback ?? false) == loopback, "\(url)")
    }

    @Test func plainHTTPOnALookAlikeLoopbackNameIsRefused() {
        for (yaml, keyPath) in [
            ("issuer: http://127.attacker.example", "issuer"),
            ("issuer: http://127.0.0.1.nip.io:9000", "issuer"),
            ("issuer: https://a.example\nclients: [{id: w, secret: s, grants: [authorization_code], redirect_uris: ['http://127.attacker.example/cb']}]", "clients[0].redirect_uris[0]"),
        ] {
            let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: yaml) }
            #expect(error?.keyPath == keyPath)
        }
        #expect(throws: Never.self) { try AuthServerConfiguration.parse(yaml: "issuer: http://127.1.2.3:9000") }
        #expect(throws: Never.self) { try AuthServerConfiguration.parse(yaml: "issuer: http://[::1]:9000") }
    }

    @Test func exchangeJWTLifetime() throws {
        #expect(try AuthServerConfiguration.parse(yaml: "issuer: https://a.example").tokens.exchangeJWTLifetime == 120)
        #expect(try AuthServerConfiguration.parse(yaml: "issuer: https://a.example\ntokens: {exchange_jwt_lifetime: 45s}").tokens.exchangeJWTLifetime == 45)
        for yaml in [
            "issuer: https://a.example\ntokens: {exchange_jwt_lifetime: 20s}",  // below the default 30 s reuse period
            "issuer: https://a.example\ntokens: {exchange_jwt_lifetime: 0}",
            "issuer: https://a.example\ntokens: {exchange_jwt_lifetime: soon}",
        ] {
            let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: yaml) }
            #expect(error?.keyPath == "tokens.exchange_jwt_lifetime", "\(yaml)")
        }
    }

    @Test func defaultScopesAndAccessTokenFormat() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: """
            issuer: http://127.0.0.1:9000
            clients:
              - {id: a, secret: s, grants: [client_credentials], scopes: [x, y], default_scopes: [x], access_token_format: jwt}
              - {id: b, secret: s, grants: [client_credentials], scopes: [x]}
            """)
        #expect(configuration.clients[0].defaultScopes == ["x"])
        #expect(configuration.clients[0].accessTokenFormat == .jwt)
        #expect(configuration.clients[1].defaultScopes == [])
        #expect(configuration.clients[1].accessTokenFormat == .opaque)
        for (yaml, keyPath) in [
            ("issuer: https://a.example\nclients: [{id: a, secret: s, grants: [client_credentials], scopes: [x], default_scopes: [z]}]", "clients[0].default_scopes[0]"),
            ("issuer: https://a.example\nclients: [{id: a, secret: s, grants: [client_credentials], scopes: [x], access_token_format: paseto}]", "clients[0].access_token_format"),
        ] {
            let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: yaml) }
            #expect(error?.keyPath == keyPath)
        }
    }

    /// Inline secrets below 128 bits: refused outside a loopback issuer (the error names the key), a warning on one.
    @Test func weakInlineSecretsAreRefusedOutsideLoopbackAndWarnedAbout() throws {
        let strong = "Vq3XbH0mY9dXk2L7pQwZrT5uJc8NfA1sGe4Ro6Wi_yE"
        let weak = "issuer: https://auth.example\nclients: [{id: s, secret: {env: OK}, grants: [client_credentials]}, {id: w, secret: demo-service-secret, grants: [client_credentials]}]"
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: weak, environment: ["OK": strong]) }
        #expect(error?.keyPath == "clients[1].secret")
        #expect(error?.description.contains("demo-service-secret") == false)  // never the secret itself
        _ = try AuthServerConfiguration.parse(yaml: "issuer: https://auth.example\nclients: [{id: s, secret: '\(strong)', grants: [client_credentials]}]")
        _ = try AuthServerConfiguration.parse(yaml: "issuer: https://auth.example\nclients: [{id: s, secret: 0123456789abcdef0123456789abcdef, grants: [client_credentials]}]")

        let loopback = try AuthServerConfiguration.parse(yaml: weak.replacingOccurrences("https://auth.example", "http://127.0.0.1:9000"), environment: ["OK": strong])
        let warnings = loopback.startupWarnings
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("client 'w'") == true)
        #expect(warnings.first?.contains("demo-service-secret") == false)
        #expect(ClientSecret.plaintext("demo-service-secret").estimatedBits ?? 999 < 128)
        #expect(ClientSecret.plaintext(strong).estimatedBits ?? 0 >= 128)
        #expect(ClientSecret.sha256Hex(String(repeating: "a", count: 64)).estimatedBits == nil)
    }

    /// Implicit and password grants stay opt-in, and each client enabling one is named at start-up (RFC 9700).
    @Test func discouragedGrantsAreWarnedAboutAtStartUp() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: """
            issuer: http://127.0.0.1:9000
            clients:
              - {id: spa, type: public, grants: [authorization_code, implicit], redirect_uris: ['http://127.0.0.1/cb']}
              - {id: web, secret: {env: S}, grants: [password, refresh_token]}
              - {id: svc, secret: {env: S}, grants: [client_credentials]}
            """, environment: ["S": "Vq3XbH0mY9dXk2L7pQwZrT5uJc8NfA1sGe4Ro6Wi_yE"])
        let warnings = configuration.startupWarnings
        #expect(warnings.count == 2)
        #expect(warnings.contains { $0.contains("'spa'") && $0.contains("RFC 9700 §2.1.2") })
        #expect(warnings.contains { $0.contains("'web'") && $0.contains("RFC 9700 §2.4") })
    }

    @Test func urlParsing() {
        #expect(ParsedURL("http://127.0.0.1:8081/cb?x=1")?.isLoopback == true)
        #expect(ParsedURL("http://[::1]:80/")?.isLoopback == true)
        #expect(ParsedURL("https://user@evil.example/") == nil)
        #expect(ParsedURL("https://a.example:0/") == nil)
        #expect(ParsedURL("javascript:alert(1)") == nil)
        #expect(ParsedURL("https://a.example/cb#frag")?.fragment == "frag")
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
