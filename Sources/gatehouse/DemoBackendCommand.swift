import ArgumentParser
import GatehouseDemoBackend
import GatehouseServiceAuth
import Logging
import ServiceLifecycle

/// `gatehouse demo-backend`: the demo echo service alone, behind gateways that are not `gatehouse demo`'s own
/// (`scripts/cluster.sh` runs one behind two gateways). Outside `--public-prefix` paths it serves only requests
/// with a JWT the issuer signed for `--audience`, verified against the issuer's JWKS (fetched over https trusting
/// `--ca-file` when given: the compose and Kubernetes stacks' issuer has a private CA's certificate).
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

    @Option(help: ArgumentHelp(
        "PEM file of the CA(s) the issuer's https certificate must chain to, in place of the system trust store.",
        discussion: "For an issuer behind a private CA (docker-compose.yml and deploy/kubernetes use certs/dev's).", valueName: "path"
    ))
    var caFile: String?

    func validate() throws {
        guard let caFile else { return }
        guard issuer.lowercased().hasPrefix("https://") else { throw ValidationError("--ca-file is only used with an https --issuer") }
        // Checked here so that a wrong mount fails the start with its reason, not every request later with a TLS error.
        let pem: [UInt8]
        switch readSmallFile(caFile) {
        case .success(let bytes): pem = bytes
        case .failure(let error): throw ValidationError("--ca-file \(error)")
        }
        guard String(decoding: pem, as: UTF8.self).contains("-----BEGIN CERTIFICATE-----") else {
            throw ValidationError("--ca-file \(caFile): no PEM certificate in the file")
        }
    }

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try bootstrapLogging(logging)
        var configuration = ServiceTokenVerifier.Configuration(jwksURL: issuer + "/.well-known/jwks.json", issuer: issuer, audiences: [audience])
        if let caFile { configuration.trust = .caFile(caFile) }
        let verifier = ServiceTokenVerifier(configuration: configuration)
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
