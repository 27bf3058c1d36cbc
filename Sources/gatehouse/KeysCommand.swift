import ArgumentParser
import GatehouseAuthServer
import GatehouseConfiguration
import Logging

/// `gatehouse keys rotate|list`: signing keys of the authorization server.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "Manage JWT signing keys.", subcommands: [Rotate.self, List.self])

    struct KeyOptions: ParsableArguments {
        @Option(help: "The authorization server's configuration file (for the key directory, algorithm and JWKS cache period).")
        var config: String?

        @Option(help: "The data directory of the authorization server.")
        var dataDir: String = "gatehouse-data"

        func manager() throws -> KeyManager {
            let configuration = try config.map { try loadConfiguration($0) } ?? AuthServerConfiguration(issuer: "http://127.0.0.1:9000")
            var logger = Logger(label: "gatehouse-admin")
            logger.logLevel = .warning
            return KeyManager.forServer(configuration, dataDirectory: dataDir, logger: logger)
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Publish a new signing key; it signs once verifiers' cached key sets must include it.")
        @OptionGroup var options: KeyOptions

        func run() async throws {
            let key = try options.manager().rotate()
            print("new key \(key.key.kid) (\(key.key.algorithm.rawValue)) published; it signs from \(key.activatesAt) (unix time)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List signing keys and their state.")
        @OptionGroup var options: KeyOptions

        func run() async throws {
            for (key, state) in try options.manager().describe() {
                print("\(key.key.kid)\t\(key.key.algorithm.rawValue)\t\(state)")
            }
        }
    }
}
