import GatehouseDemoBackend
import GatehouseTestSupport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

@testable import GatehouseGateway

/// The active health check's probe against a real HTTP server and a closed port.
@Suite struct HealthProbeTests {
    @Test func probeSeesUpAndDown() async throws {
        let probePort = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = probePort.localAddress!.port!
        try await probePort.close()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let group = ServiceGroup(configuration: .init(services: [.init(service: DemoBackend.application(host: "127.0.0.1", port: port, logger: logger))], logger: logger))
        let target = TargetKey(host: "127.0.0.1", port: port)
        // Nothing listens yet: down.
        #expect(await HealthCheckService.probe(target, path: "/healthz", timeout: .milliseconds(500), group: MultiThreadedEventLoopGroup.singleton) == false)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(await eventually(interval: .milliseconds(50)) { await HealthCheckService.probe(target, path: "/healthz", timeout: .milliseconds(500), group: MultiThreadedEventLoopGroup.singleton) })
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(await HealthCheckService.probe(target, path: "/healthz", timeout: .milliseconds(500), group: MultiThreadedEventLoopGroup.singleton) == false)
    }
}
