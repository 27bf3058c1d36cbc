import GatehouseStore
import GatehouseStorePostgres
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory per test, removed afterwards.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/gatehouse-store-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    func remove() { _ = system("rm -rf '\(path)'") }
}

/// The store implementations the contract tests run against.
enum StoreBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// A new, empty database of this kind (a file in a temporary directory, or a database on the suite's server).
    func makeDatabase() throws -> StoreDatabase {
        switch self {
        case .sqlite:
            let directory = TemporaryDirectory()
            return StoreDatabase(backend: self, location: directory.path + "/auth.sqlite", server: nil) { directory.remove() }
        case .postgres:
            guard let server = PostgresServer.current else {
                throw PostgresServer.Failure(description: "no PostgreSQL server: the suite needs the .postgresServer trait")
            }
            let name = try server.createDatabase()
            return StoreDatabase(backend: self, location: name, server: server) { server.dropDatabase(name) }
        }
    }
}

/// One empty database; `open()` may be called several times (a reopened store, or several replicas at once).
struct StoreDatabase: Sendable {
    let backend: StoreBackend
    /// The SQLite file, or the PostgreSQL database name.
    let location: String
    let server: PostgresServer?
    let cleanup: @Sendable () -> Void

    func open() async throws -> any AuthStore {
        switch backend {
        case .sqlite:
            return try await SQLiteAuthStore.open(.init(path: location), logger: Logger(label: "test"))
        case .postgres:
            return try await PostgresAuthStore.open(server!.configuration(database: location), logger: Logger(label: "test"))
        }
    }

    /// Opens a store, runs `body`, closes the store and removes the database, whatever `body` did.
    static func with(_ backend: StoreBackend, _ body: (any AuthStore, StoreDatabase) async throws -> Void) async throws {
        let database = try backend.makeDatabase()
        defer { database.cleanup() }
        let store = try await database.open()
        do {
            try await body(store, database)
        } catch {
            try? await store.close()
            throw error
        }
        try await store.close()
    }
}
