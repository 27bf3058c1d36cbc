import Foundation
import GatehouseConfiguration
import GatehouseServiceAuth
import GatehouseStore
import GatehouseTokens
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

@testable import GatehouseAuthServer
@testable import GatehouseGateway

/// The gateway's authorization-server client against a real authorization server on a loopback port.
@Suite struct GatewayClientTests {
    static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }

    @Test func discoversExchangesAndFailsClosed() async throws {
        let port = try Self.freePort()
        var configuration = try testConfiguration()
        configuration.issuer = "http://127.0.0.1:\(port)"
        var template = Array("/tmp/gatehouse-gwclient-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let store = try await SQLiteAuthStore.open(.init(path: directory + "/auth.sqlite", fullSync: false), logger: logger)
        let keys = KeyManager.forServer(configuration, dataDirectory: directory, logger: logger)
        try await keys.reload()
        let server = try AuthorizationServer(configuration: configuration, store: store, keys: keys, logger: logger)
        try await server.registerConfiguredClientsAndUsers()

        let client = AuthorizationServerClient(issuer: configuration.issuer, clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret", timeout: .seconds(2))
        #expect(await client.exchange("anything") == .unavailable("the authorization server has not been discovered"))

        // Discovery starts before the server is up and keeps retrying until it answers.
        let discovery = Task { try await client.discover(initial: .milliseconds(20), maximum: .milliseconds(100), logger: logger) }
        try await Task.sleep(for: .milliseconds(150))
        let group = ServiceGroup(configuration: .init(services: [.init(service: server.application(host: "127.0.0.1", port: port))], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let metadata = try await discovery.value
            #expect(metadata.issuer == "http://127.0.0.1:\(port)")
            #expect(metadata.tokenEndpoint == "http://127.0.0.1:\(port)/token")

            // A real opaque token, exchanged for a JWT that verifies against the published keys.
            let issued = try await SimpleHTTPClient.send(
                host: "127.0.0.1", port: port, method: .POST, path: "/token",
                headers: ["Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + Data("demo-service:demo-service-secret".utf8).base64EncodedString()],
                body: "grant_type=client_credentials&scope=orders:read", timeout: .seconds(2), group: MultiThreadedEventLoopGroup.singleton
            )
            let opaque = try #require((try JSONSerialization.jsonObject(with: Data(issued.body.utf8)) as? [String: Any])?["access_token"] as? String)
            guard case .jwt(let jwt, let expiresAt) = await client.exchange(opaque) else {
                Issue.record("expected a JWT")
                return
            }
            #expect(expiresAt > Date().timeIntervalSince1970 + 3000)
            let (jwks, maxAge) = try await client.fetchJWKS()
            #expect(maxAge == 300)
            let claims = try await JWTVerifier(jwksJSON: jwks).verifyAccessToken(jwt, policy: .init(issuers: [configuration.issuer], audiences: []), now: Int(Date().timeIntervalSince1970))
            #expect(claims.client_id == "demo-service")
            #expect(claims.scope == "orders:read")

            // Bad tokens are inactive, not errors.
            #expect(await client.exchange("not-a-token") == .inactive)
            #expect(await client.exchange(TokenLocator.make(id: 4242).token) == .inactive)

            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        // The server is gone: fail closed.
        guard case .unavailable = await client.exchange(TokenLocator.make(id: 1).token) else {
            Issue.record("expected unavailable")
            return
        }
        try await store.close()
    }

    @Test func discoveryRefusesAMixedUpIssuer() async throws {
        let client = AuthorizationServerClient(issuer: "http://127.0.0.1:1", clientID: "x", clientSecret: "y", timeout: .milliseconds(200))
        await #expect(throws: (any Error).self) { _ = try await client.fetchMetadata() }
        #expect(SimpleHTTPClient.maxAge("public, max-age=300") == 300)
        #expect(SimpleHTTPClient.maxAge("no-store") == nil)
        #expect(AuthorizationServerClient.formEncode("a b&c=d:é") == "a%20b%26c%3Dd%3A%C3%A9")
    }
}
