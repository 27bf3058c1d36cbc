import ArgumentParser
import GatehouseDemoBackend
import GatehouseServiceAuth
import Logging
import ServiceLifecycle

/// `gatehouse demo-backend`: the demo echo service alone, behind gateways that are not `gatehouse demo`'s own
/// (`scripts/cluster.sh` runs one behind two gateways). Outside `--public-prefix` paths it serves only requests
/// with a JWT the issuer signed for `--audience`, verified against the issuer's JWKS.
struct DemoBackendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo-backend", abstract: "Run the demo backend (an echo service that verifies gateway JWTs).")

    @Option(help: "Listen address.")
    var host: String = "127.0.0.1"

    @Option(help: "Listen port.")
    var port: Int = 8081

    @Option(help: "The authorization server's issuer; its JWKS is <issuer>/.well-known/jwks.json.")
    var issuer: String

    @Option(help: "The audience the JWTs must carry (the authorization server's tokens.jwt_audience).")
    var audience: String

    @Option(help: "Path prefixes served without a token.")
    var publicPrefix: [String] = ["/public/"]

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try bootstrapLogging(logging)
        let verifier = ServiceTokenVerifier(configuration: .init(jwksURL: issuer + "/.well-known/jwks.json", issuer: issuer, audiences: [audience]))
        let port = self.port
        let application = DemoBackend.application(
            host: host, port: port, logger: logger, protection: DemoBackend.Protection(verifier: verifier, publicPathPrefixes: publicPrefix)
        ) { _ in
            print("{\"event\":\"listening\",\"service\":\"demo-backend\",\"port\":\(port)}")
            flushStandardOutput()
        }
        let group = ServiceGroup(configuration: .init(services: [.init(service: application)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
