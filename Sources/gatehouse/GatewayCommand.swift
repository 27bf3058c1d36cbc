import ArgumentParser
import GatehouseConfiguration
import GatehouseGateway
import GatehouseObservability
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `gatehouse gateway`: runs the gateway.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Run the gateway (reverse proxy).")

    @Option(help: "The gateway's YAML configuration file.")
    var config: String

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try bootstrapLogging(logging)
        let configuration = try GatewayConfiguration.load(file: config, environment: Environment.variables())
        try await GatewayRunner.run(configuration: configuration, configFile: config, logger: logger, extraServices: [])
    }
}

/// Starting the gateway, shared by `gateway` and `demo`.
enum GatewayRunner {
    /// Changes a command makes to the configuration file's contents (`gatehouse demo`'s ports and issuer), applied
    /// at start and again on every reload.
    typealias Overrides = @Sendable (inout GatewayConfiguration) -> Void

    static func services(configuration: GatewayConfiguration, configFile: String, logger: Logger, overrides: @escaping Overrides = { _ in }) throws -> (GatewayServer, [any Service]) {
        let tracing = ServerTracing(configuration.tracing, defaultServiceName: "gatehouse-gateway", logger: logger)
        let compiler = GatewayCompiler(logger: logger, spanSink: tracing.exporter, sampler: tracing.samplerFromEnvironment ? tracing.settings.sampler : nil)
        // The access log is opened at start (a reload does not move it; SIGUSR1 reopens it).
        let accessLog = try configuration.accessLog.map { try AccessLogWriter(path: $0.path) }
        let server = GatewayServer(
            settings: GatewayCompiler.settings(configuration, defaultThreads: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))),
            gateway: compiler.compile(configuration), logger: logger, accessLog: accessLog
        ) { ports in
            print("{\"event\":\"listening\",\"service\":\"gateway\",\"ports\":\(ports)}")
            flushStandardOutput()
        }
        var services: [any Service] = [
            server, HealthCheckService(runtime: server.runtime, logger: logger),
            GatewayReloadService(configFile: configFile, overrides: overrides, runtime: server.runtime, compiler: compiler, logger: logger),
        ]
        if accessLog != nil { services.append(AccessLogReopenService(logger: logger)) }
        if let admin = configuration.admin {
            services.append(AdminServer(host: admin.host, port: admin.port, gateway: server, logger: logger))
        }
        if let exporter = tracing.exporter { services.append(exporter) }
        return (server, services)
    }

    static func run(configuration: GatewayConfiguration, configFile: String, logger: Logger, extraServices: [any Service]) async throws {
        let (_, services) = try services(configuration: configuration, configFile: configFile, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: (services + extraServices).map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}

/// SIGHUP: re-reads the configuration file, validates and compiles it, and swaps it in. Exchanges in flight finish
/// on the snapshot they started with; a file that fails validation is logged and the running configuration stays.
/// Listener addresses and thread counts are fixed at start (a change to them is logged and ignored).
struct GatewayReloadService: Service {
    let configFile: String
    let overrides: GatewayRunner.Overrides
    let runtime: GatewayRuntime
    let compiler: GatewayCompiler
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                do {
                    var configuration = try GatewayConfiguration.load(file: configFile, environment: Environment.variables())
                    overrides(&configuration)
                    runtime.replace(compiler.compile(configuration))
                    logger.notice("configuration reloaded", metadata: ["file": "\(configFile)", "routes": "\(configuration.routes.count)"])
                    print("{\"event\":\"reloaded\",\"service\":\"gateway\"}")
                    flushStandardOutput()
                } catch {
                    logger.error("configuration reload refused; the running configuration stays", metadata: ["error": "\(error)"])
                    print("{\"event\":\"reload_failed\",\"service\":\"gateway\"}")
                    flushStandardOutput()
                }
            }
        }
    }
}
