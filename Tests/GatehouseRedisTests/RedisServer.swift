import Foundation
import GatehouseRedis
import GatehouseTestSupport
import NIOCore
import NIOPosix

/// A real `redis-server` on a free loopback port with a temporary directory, for one test; `stop()` ends it and
/// removes the directory (tests call it in `defer`, so it also runs when an expectation throws).
final class RedisServer: @unchecked Sendable {
    let port: Int
    let directory: String
    private let extraArguments: [String]
    private var process: Process?

    init(arguments: [String] = []) throws {
        self.port = try Self.freePort()
        self.directory = NSTemporaryDirectory() + "gatehouse-redis-\(UUID().uuidString)"
        self.extraArguments = arguments
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Starts the server and waits (polling PING, 10 s deadline) until it answers.
    static func start(arguments: [String] = []) async throws -> RedisServer {
        let server = try RedisServer(arguments: arguments)
        do {
            try await server.start()
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let port = port
        let answered = await eventually(timeout: .seconds(10), interval: .milliseconds(20)) { Self.answersPing(port: port) || !process.isRunning }
        guard process.isRunning else { throw ServerError(message: "redis-server exited with \(process.terminationStatus)") }
        guard answered else { throw ServerError(message: "redis-server did not answer PING within 10 s") }
    }

    /// Stops the server (SIGKILL, then waits for the exit) and, unless `keepDirectory`, removes its directory.
    /// SIGKILL because a child spawned from a test thread can inherit a signal mask that blocks SIGTERM (seen
    /// here: the server ignored it and `waitUntilExit` hung); nothing is persisted, so nothing is lost.
    func stop(keepDirectory: Bool = false) {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        process = nil
        if !keepDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }

    var isRunning: Bool { process?.isRunning ?? false }

    func configuration(_ change: (inout RedisConfiguration) -> Void = { _ in }) -> RedisConfiguration {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: port)
        change(&configuration)
        return configuration
    }

    /// Runs `redis-cli` against the server (for set-up that must not go through the client under test).
    @discardableResult
    func cli(_ arguments: [String], password: String? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments = ["-p", "\(port)"] + (password.map { ["--no-auth-warning", "-a", $0] } ?? []) + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func answersPing(port: Int) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments = ["-p", "\(port)", "PING"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // A server with requirepass answers NOAUTH: it is up all the same.
        let text = String(decoding: data, as: UTF8.self)
        return text.contains("PONG") || text.contains("NOAUTH")
    }

    static func freePort() throws -> Int {
        let group = MultiThreadedEventLoopGroup.singleton
        let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }

    struct ServerError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
