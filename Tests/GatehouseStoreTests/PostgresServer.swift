import GatehouseStore
import GatehouseStorePostgres
import Logging
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for the tests, from Debian's `postgresql` package: `initdb` into a temporary
/// directory, then `postgres` on loopback and a free port (fsync off: durability across power loss is the
/// server's business, not what these tests check). PostgreSQL refuses to run as root, so under root (CI) every
/// server command runs as `nobody` through `runuser`, in a directory owned by it. TCP connections authenticate
/// with SCRAM-SHA-256 and a password, as a deployment would; the tests' own administration goes through the
/// Unix socket in the data directory.
final class PostgresServer: Sendable {
    static let superuser = "gatehouse"
    static let password = "test-password-not-secret"

    let binDirectory: String
    let directory: String
    let port: Int
    private let asUser: String

    /// The server of the enclosing `.postgresServer` scope.
    @TaskLocal static var current: PostgresServer?

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The newest installed PostgreSQL's binaries, or a failure that says how to install them.
    static func findBinaries() throws -> String {
        for version in (12...20).reversed() {
            let bin = "/usr/lib/postgresql/\(version)/bin"
            if access(bin + "/initdb", X_OK) == 0 && access(bin + "/postgres", X_OK) == 0 { return bin }
        }
        throw Failure(description: "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): the PostgreSQL store tests need Debian's postgresql package; run scripts/install-test-deps.sh")
    }

    /// Runs `initdb` and starts the server; throws (with the server's log) if it does not come up.
    static func start() throws -> PostgresServer {
        let bin = try findBinaries()
        var template = Array("/tmp/gatehouse-pg-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        let asUser = getuid() == 0 ? "runuser -u nobody -- " : ""
        if getuid() == 0 {
            guard system("chown nobody '\(directory)'") == 0 else { throw Failure(description: "cannot chown \(directory) to nobody") }
        }
        chmod(directory, 0o700)
        let pwfile = directory + "/pwfile"
        guard let file = fopen(pwfile, "w") else { throw Failure(description: "cannot write \(pwfile)") }
        fputs(password + "\n", file)
        fclose(file)
        if getuid() == 0 { _ = system("chown nobody '\(pwfile)'") }
        let initdb = "\(asUser)\(bin)/initdb -D '\(directory)/data' -U \(superuser) --pwfile='\(pwfile)' --auth-local=trust --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C"
        guard system("\(initdb) > '\(directory)/initdb.log' 2>&1") == 0 else {
            let log = read(directory + "/initdb.log")
            _ = system("rm -rf '\(directory)'")
            throw Failure(description: "initdb failed: \(log)")
        }
        let server = PostgresServer(binDirectory: bin, directory: directory, port: try freePort(), asUser: asUser)
        try server.startProcess()
        return server
    }

    private init(binDirectory: String, directory: String, port: Int, asUser: String) {
        self.binDirectory = binDirectory
        self.directory = directory
        self.port = port
        self.asUser = asUser
    }

    /// Starts `postgres` on the data directory and waits (pg_ctl -w polls the server) until it accepts connections.
    func startProcess() throws {
        let options = "-k '\(directory)' -p \(port) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        let command = "\(asUser)\(binDirectory)/pg_ctl -D '\(directory)/data' -l '\(directory)/server.log' -w -t 60 -o \"\(options)\" start > /dev/null 2>&1"
        guard system(command) == 0 else {
            throw Failure(description: "postgres did not start: \(Self.read(directory + "/server.log"))")
        }
    }

    /// Stops the server: `fast` closes sessions cleanly, `immediate` is a crash (recovery on the next start).
    func stopProcess(mode: String = "fast") {
        _ = system("\(asUser)\(binDirectory)/pg_ctl -D '\(directory)/data' -m \(mode) -w -t 60 stop > /dev/null 2>&1")
    }

    /// Stops the server and removes its directory.
    func destroy() {
        stopProcess(mode: "immediate")
        _ = system("rm -rf '\(directory)'")
    }

    /// Runs blocking work (the server commands, which wait for child processes) on NIO's thread pool, so that
    /// the few threads of Swift's cooperative pool stay free for the tests running meanwhile.
    static func offloaded<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }

    /// Runs SQL as the superuser over the Unix socket.
    func psql(_ sql: String, database: String = "postgres") throws {
        let command = "\(asUser)\(binDirectory)/psql -h '\(directory)' -p \(port) -U \(Self.superuser) -d \(database) -v ON_ERROR_STOP=1 -q -c \"\(sql)\" > /dev/null 2>&1"
        guard system(command) == 0 else { throw Failure(description: "psql failed: \(sql)") }
    }

    /// A new empty database; its name.
    func createDatabase() throws -> String {
        let name = "t_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try psql("CREATE DATABASE \(name)")
        return name
    }

    func dropDatabase(_ name: String) {
        try? psql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// The store's configuration for a database of this server (over TCP, with the password).
    func configuration(database: String, poolSize: Int = 8, statementTimeoutMilliseconds: Int = 2000, connectTimeoutMilliseconds: Int = 2000) -> PostgresAuthStore.Configuration {
        PostgresAuthStore.Configuration(
            host: "127.0.0.1", port: port, username: Self.superuser, password: Self.password, database: database, poolSize: poolSize,
            statementTimeoutMilliseconds: statementTimeoutMilliseconds, connectTimeoutMilliseconds: connectTimeoutMilliseconds
        )
    }

    static func read(_ path: String) -> String {
        guard let file = fopen(path, "r") else { return "(no \(path))" }
        defer { fclose(file) }
        var result = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            result += String(cString: buffer)
        }
        return result
    }

    /// A port the kernel says is free now (bound to port 0, read back, released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure(description: "bind() failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Starts a PostgreSQL server for the suite it is attached to and stops it (removing its data) when the suite
/// ends; tests find it as `PostgresServer.current`.
struct PostgresServerTrait: SuiteTrait, TestScoping {
    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let server = try await PostgresServer.offloaded { try PostgresServer.start() }
        do {
            try await PostgresServer.$current.withValue(server) { try await function() }
        } catch {
            _ = try? await PostgresServer.offloaded { server.destroy() }
            throw error
        }
        _ = try await PostgresServer.offloaded { server.destroy() }
    }
}

extension Trait where Self == PostgresServerTrait {
    /// A real PostgreSQL server for the suite (see `PostgresServer`).
    static var postgresServer: Self { Self() }
}
