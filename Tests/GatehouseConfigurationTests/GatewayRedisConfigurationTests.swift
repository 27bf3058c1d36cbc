import GatehouseConfiguration
import Testing

/// The gateway's top-level `redis:` section.
@Suite struct GatewayRedisConfigurationTests {
    private func gateway(_ redis: String) -> String {
        """
        listeners: [{port: 8080}]
        clusters: [{name: backend, targets: ['http://127.0.0.1:18080']}]
        routes: [{cluster: backend}]
        \(redis)

        """
    }

    @Test func absentMeansNoRedisAndDefaultsApply() throws {
        #expect(try GatewayConfiguration.parse(yaml: gateway("")).redis == nil)
        let redis = try #require(try GatewayConfiguration.parse(yaml: gateway("redis: {}")).redis)
        #expect(redis.host == "127.0.0.1")
        #expect(redis.port == 6379)
        #expect(redis.username == nil && redis.password == nil && redis.database == nil)
        #expect(redis.timeoutMilliseconds == 50)
        #expect(redis.poolSize == 1)
        #expect(redis.protocolVersion == 3)
    }

    @Test func parsesEveryKey() throws {
        let redis = try #require(try GatewayConfiguration.parse(
            yaml: gateway("redis: {url: 'redis://limiter@10.0.0.5:6380/2', password: {env: REDIS_PASSWORD}, timeout: 20ms, pool_size: 8, protocol: 2}"),
            environment: ["REDIS_PASSWORD": "from-env"]
        ).redis)
        #expect(redis.host == "10.0.0.5")
        #expect(redis.port == 6380)
        #expect(redis.username == "limiter")
        #expect(redis.password == "from-env")
        #expect(redis.database == 2)
        #expect(redis.timeoutMilliseconds == 20)
        #expect(redis.poolSize == 8)
        #expect(redis.protocolVersion == 2)
        #expect("\(redis)" == "redis://limiter@10.0.0.5:6380/2")
    }

    @Test func aPasswordInTheURLIsReadButNeverShown() throws {
        let redis = try #require(try GatewayConfiguration.parse(yaml: gateway("redis: {url: 'redis://:url-secret@[::1]:7000'}")).redis)
        #expect(redis.host == "::1")
        #expect(redis.port == 7000)
        #expect(redis.username == nil)
        #expect(redis.password == "url-secret")
        #expect(!"\(redis)".contains("url-secret"))
        let error = #expect(throws: ConfigurationError.self) {
            try GatewayConfiguration.parse(yaml: gateway("redis: {url: 'redis://u:url-secret@host:99999'}"))
        }
        #expect(error?.keyPath == "redis.url")
        #expect(error.map { !"\($0)".contains("url-secret") } == true)
    }

    @Test(arguments: [
        ("redis: {url: 'http://127.0.0.1:6379'}", "redis.url"),
        ("redis: {url: 'rediss://127.0.0.1'}", "redis.url"),
        ("redis: {url: 'redis://127.0.0.1/x'}", "redis.url"),
        ("redis: {url: 'redis://'}", "redis.url"),
        ("redis: {timeout: 0}", "redis.timeout"),
        ("redis: {timeout: 11s}", "redis.timeout"),
        ("redis: {pool_size: 0}", "redis.pool_size"),
        ("redis: {pool_size: 65}", "redis.pool_size"),
        ("redis: {protocol: 4}", "redis.protocol"),
        ("redis: {password: {env: UNSET_VARIABLE}}", "redis.password"),
        ("redis: {pool: 4}", "redis.pool"),
    ])
    func badValuesAreRefusedNamingTheKey(yaml: String, keyPath: String) {
        let error = #expect(throws: ConfigurationError.self) { try GatewayConfiguration.parse(yaml: gateway(yaml)) }
        #expect(error?.keyPath == keyPath, "\(error.map { "\($0)" } ?? "no error")")
    }
}
