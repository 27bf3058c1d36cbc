import ArgumentParser
import GatehouseConfiguration
import GatehouseStore
import GatehouseStorePostgres
import Logging

/// Opens the store a configuration names: the SQLite file in the data directory, or the shared PostgreSQL
/// database (`storage.postgres`). Both migrate their schema on open.
enum StoreOpening {
    static func open(_ storage: AuthServerConfiguration.Storage, dataDirectory: String, logger: Logger) async throws -> any AuthStore {
        if let postgres = storage.postgres {
            logger.notice("opening PostgreSQL store", metadata: ["url": "\(postgres.redactedURL)", "pool_size": "\(postgres.poolSize)"])
            return try await PostgresAuthStore.open(postgresConfiguration(postgres), logger: logger)
        }
        try Directories.create(dataDirectory)
        let path = storage.sqliteFile.hasPrefix("/") ? storage.sqliteFile : dataDirectory + "/" + storage.sqliteFile
        return try await SQLiteAuthStore.open(.init(path: path, fullSync: storage.synchronous == .full), logger: logger)
    }

    static func postgresConfiguration(_ postgres: AuthServerConfiguration.Postgres) -> PostgresAuthStore.Configuration {
        PostgresAuthStore.Configuration(
            host: postgres.host, port: postgres.port, username: postgres.username, password: postgres.password, database: postgres.database,
            poolSize: postgres.poolSize, statementTimeoutMilliseconds: postgres.statementTimeoutMilliseconds,
            tls: postgres.requireTLS ? .makeClientConfiguration() : nil
        )
    }
}

/// `gatehouse migrate --config FILE`: applies the store's schema migrations and exits (for deployments that
/// migrate before rolling out replicas). Servers migrate on start too; concurrent runs migrate once.
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Apply the authorization server's database migrations and exit.")

    @Option(help: "The authorization server's YAML configuration file.")
    var config: String

    @Option(help: "Directory for the SQLite database (overrides data_dir in the file; default ./gatehouse-data).")
    var dataDir: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try bootstrapLogging(logging)
        let configuration = try loadConfiguration(config)
        let store = try await StoreOpening.open(configuration.storage, dataDirectory: dataDir ?? configuration.dataDirectory ?? "gatehouse-data", logger: logger)
        try await store.close()
        print("{\"event\":\"migrated\",\"storage\":\"\(configuration.storage.postgres == nil ? "sqlite" : "postgres")\"}")
    }
}
