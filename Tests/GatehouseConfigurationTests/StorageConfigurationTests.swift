import GatehouseConfiguration
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct StorageConfigurationTests {
    @Test func sqliteIsTheDefault() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: "issuer: https://a.example")
        #expect(configuration.storage.postgres == nil)
        #expect(configuration.storage.sqliteFile == "auth.sqlite")
    }

    @Test func postgresWithEveryKey() throws {
        let configuration = try AuthServerConfiguration.parse(
            yaml: """
                issuer: https://a.example
                storage:
                  postgres:
                    url: postgres://gatehouse@db.internal:6432/auth?sslmode=require
                    password: {env: GATEHOUSE_DB_PASSWORD}
                    pool_size: 32
                    statement_timeout: 500ms
                """,
            environment: ["GATEHOUSE_DB_PASSWORD": "hunter2-but-longer"]
        )
        let postgres = try #require(configuration.storage.postgres)
        #expect(postgres == AuthServerConfiguration.Postgres(host: "db.internal", port: 6432, username: "gatehouse", database: "auth", password: "hunter2-but-longer", poolSize: 32, statementTimeoutMilliseconds: 500, requireTLS: true))
        // The password is never printed.
        #expect(!"\(postgres)".contains("hunter2"))
        #expect(!String(reflecting: postgres).contains("hunter2"))
        #expect(postgres.redactedURL == "postgres://gatehouse@db.internal:6432/auth?sslmode=require")
    }

    @Test func postgresDefaultsAndAPasswordFile() throws {
        let path = "/tmp/gatehouse-storage-test-\(getpid())"
        let file = fopen(path, "w")
        fputs("from-a-file\n", file)
        fclose(file)
        defer { unlink(path) }
        let configuration = try AuthServerConfiguration.parse(yaml: """
            issuer: https://a.example
            storage: {postgres: {url: "postgresql://app@127.0.0.1/gh", password: {file: \(path)}}}
            """)
        let postgres = try #require(configuration.storage.postgres)
        #expect(postgres.host == "127.0.0.1")
        #expect(postgres.port == 5432)
        #expect(postgres.password == "from-a-file")
        #expect(postgres.poolSize == 16)
        #expect(postgres.statementTimeoutMilliseconds == 2000)
        #expect(postgres.requireTLS == false)
    }

    @Test func anIPv6HostAndEscapedNames() throws {
        let configuration = try AuthServerConfiguration.parse(yaml: "issuer: https://a.example\nstorage: {postgres: {url: 'postgres://us%40er@[::1]:5433/d%2Db'}}")
        let postgres = try #require(configuration.storage.postgres)
        #expect(postgres.host == "::1")
        #expect(postgres.port == 5433)
        #expect(postgres.username == "us@er")
        #expect(postgres.database == "d-b")
        #expect(postgres.password == nil)
    }

    @Test(arguments: [
        ("storage: {sqlite: {file: a.sqlite}, postgres: {url: 'postgres://u@h/d'}}", "storage.postgres", "exactly one"),
        ("storage: {postgres: {pool_size: 4}}", "storage.postgres.url", "required"),
        ("storage: {postgres: {url: 'mysql://u@h/d'}}", "storage.postgres.url", "postgres://"),
        ("storage: {postgres: {url: 'postgres://h/d'}}", "storage.postgres.url", "no user"),
        ("storage: {postgres: {url: 'postgres://u@h'}}", "storage.postgres.url", "no database"),
        ("storage: {postgres: {url: 'postgres://u@h:99999/d'}}", "storage.postgres.url", "port"),
        ("storage: {postgres: {url: 'postgres://u@h/d?sslmode=sometimes'}}", "storage.postgres.url", "sslmode"),
        ("storage: {postgres: {url: 'postgres://u@h/d?timeout=1'}}", "storage.postgres.url", "unknown URL parameter"),
        ("storage: {postgres: {url: 'postgres://u@h/d', password: inline-secret}}", "storage.postgres.password", "{env: NAME}"),
        ("storage: {postgres: {url: 'postgres://u@h/d', password: {env: NOT_SET_ANYWHERE}}}", "storage.postgres.password", "not set"),
        ("storage: {postgres: {url: 'postgres://u@h/d', pool_size: 0}}", "storage.postgres.pool_size", "between"),
        ("storage: {postgres: {url: 'postgres://u@h/d', statement_timeout: soon}}", "storage.postgres.statement_timeout", "duration"),
        ("storage: {postgres: {url: 'postgres://u@h/d', poolsize: 3}}", "storage.postgres.poolsize", "unknown key"),
    ])
    func invalidStorageIsNamed(yaml: String, keyPath: String, reason: String) {
        let error = #expect(throws: ConfigurationError.self) { try AuthServerConfiguration.parse(yaml: "issuer: https://a.example\n" + yaml) }
        #expect(error?.keyPath == keyPath)
        #expect(error?.reason.contains(reason) == true, "\(error?.reason ?? "")")
    }

    @Test func aPasswordInTheURLIsRefusedWithoutEchoingIt() {
        let error = #expect(throws: ConfigurationError.self) {
            try AuthServerConfiguration.parse(yaml: "issuer: https://a.example\nstorage: {postgres: {url: 'postgres://u:sup3r-secret@h/d'}}")
        }
        #expect(error?.keyPath == "storage.postgres.url")
        #expect(error?.reason.contains("password") == true)
        #expect(!(error.map { "\($0)" } ?? "").contains("sup3r-secret"))
    }
}
