import GatehouseConfiguration
import Testing

/// The authorization server's keys for issue 10: listener timeouts, hashing pool, session caps, per-client
/// application type and first-party flag, trusted proxies. Each is validated at load and named when wrong.
@Suite struct AuthServerSecurityConfigurationTests {
    @Test func defaults() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: "issuer: https://auth.example.com\n")
        #expect(configuration.listen.headerReadTimeout == 10)
        #expect(configuration.listen.idleTimeout == 60)
        #expect(configuration.login.hashingThreads == 1)
        #expect(configuration.login.hashingQueue == 32)
        #expect(configuration.login.maxSessions == 200_000)
        #expect(configuration.login.maxAnonymousSessions == 50_000)
        #expect(configuration.trustedProxies.isEmpty)
    }

    @Test func parsesEveryKey() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: """
            issuer: https://auth.example.com
            listen: {header_read_timeout: 5s, idle_timeout: 2m}
            login: {hashing_threads: 2, hashing_queue: 0, max_sessions: 1000, max_anonymous_sessions: 10}
            trusted_proxies: [10.0.0.0/8, "::1/128", 192.168.1.7]
            clients:
              - {id: cli, type: public, application_type: native, grants: [authorization_code], redirect_uris: ['http://127.0.0.1/cb']}
              - {id: spa, type: public, first_party: true, grants: [authorization_code], redirect_uris: ['https://app.example/cb']}
            """)
        #expect(configuration.listen.headerReadTimeout == 5)
        #expect(configuration.listen.idleTimeout == 120)
        #expect(configuration.login.hashingThreads == 2)
        #expect(configuration.login.hashingQueue == 0)
        #expect(configuration.login.maxSessions == 1000)
        #expect(configuration.login.maxAnonymousSessions == 10)
        #expect(configuration.trustedProxies.map(\.description) == ["10.0.0.0/8", "::1/128", "192.168.1.7/32"])
        #expect(configuration.clients[0].applicationType == .native)
        #expect(configuration.clients[0].firstParty == false)
        #expect(configuration.clients[1].applicationType == .web)
        #expect(configuration.clients[1].firstParty == true)
    }

    @Test(arguments: [
        ("listen: {header_read_timeout: 31s}", "listen.header_read_timeout"),
        ("listen: {header_read_timeout: 0}", "listen.header_read_timeout"),
        ("listen: {idle_timeout: 2h}", "listen.idle_timeout"),
        ("login: {hashing_threads: 0}", "login.hashing_threads"),
        ("login: {hashing_queue: -1}", "login.hashing_queue"),
        ("login: {max_sessions: 0}", "login.max_sessions"),
        ("login: {max_anonymous_sessions: 0}", "login.max_anonymous_sessions"),
        ("trusted_proxies: [10.0.0.0/8, 10.0.0.1/8]", "trusted_proxies[1]"),
        ("trusted_proxies: [proxy.example]", "trusted_proxies[0]"),
        ("clients: [{id: c, type: public, application_type: desktop, grants: [authorization_code], redirect_uris: ['http://127.0.0.1/cb']}]", "clients[0].application_type"),
        ("clients: [{id: c, type: public, first_party: yes please, grants: [authorization_code], redirect_uris: ['http://127.0.0.1/cb']}]", "clients[0].first_party"),
    ])
    func badValuesAreRefusedNamingTheKey(yaml: String, keyPath: String) {
        let error = #expect(throws: ConfigurationError.self) {
            try AuthServerConfiguration.parse(yaml: "issuer: https://auth.example.com\n" + yaml + "\n", file: "auth.yaml")
        }
        #expect(error?.keyPath == keyPath, "\(error.map { "\($0)" } ?? "no error")")
    }

    /// The gateway and the authorization server parse and match CIDR blocks with the one shared type.
    @Test func sharedCIDRMatchesIPv4MappedPeers() throws {
        let block = try #require(CIDR.parse("10.1.0.0/16"))
        #expect(block.contains(try #require(CIDR.parseAddress("10.1.2.3"))))
        #expect(block.contains(try #require(CIDR.parseAddress("::ffff:10.1.2.3"))))
        #expect(!block.contains(try #require(CIDR.parseAddress("10.2.0.1"))))
        #expect(GatewayConfiguration.CIDR.parse("10.1.0.0/16") == block)
        #expect(CIDR.canonicalText(try #require(CIDR.parseAddress("::ffff:10.1.2.3"))) == "10.1.2.3")
        #expect(CIDR.canonicalText(try #require(CIDR.parseAddress("2001:DB8:0:0::1"))) == "2001:db8::1")
    }
}
