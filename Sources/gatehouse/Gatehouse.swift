import ArgumentParser

/// `gatehouse`: the front door for microservices. This target only parses arguments and wires libraries.
@main
struct Gatehouse: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatehouse",
        abstract: "Gatehouse: an OAuth 2.0 authorization server and gateway for microservices.",
        subcommands: [AuthCommand.self, DemoCommand.self, ClientsCommand.self, UsersCommand.self, KeysCommand.self, GatewayCommand.self, MigrateCommand.self, DemoBackendCommand.self, RedisBenchCommand.self]
    )
}

/// Options every server command shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"
}
