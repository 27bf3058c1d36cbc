import NIOCore
import Testing

@testable import GatehouseGateway

/// RFC 8414 discovery against a local server.
@Suite struct DiscoveryTests {
    /// An issuer with a path (`http://127.0.0.1:PORT/tenant`) publishes its metadata at
    /// `/.well-known/oauth-authorization-server/tenant` (RFC 8414 §3.1), not at `/tenant/.well-known/…`.
    @Test func issuerWithAPathIsDiscoveredAtItsRFC8414URL() async throws {
        let server = try await ScriptedHTTPServer { target, port in
            guard target == "/.well-known/oauth-authorization-server/tenant" else { return ScriptedHTTPServer.notFound }
            let issuer = "http://127.0.0.1:\(port)/tenant"
            return ScriptedHTTPServer.ok(#"{"issuer":"\#(issuer)","token_endpoint":"\#(issuer)/token","jwks_uri":"\#(issuer)/jwks"}"#)
        }
        let issuer = "http://127.0.0.1:\(server.port)/tenant"
        let client = AuthorizationServerClient(issuer: issuer, clientID: "gateway", clientSecret: "secret", timeout: .seconds(5))
        let metadata = try await client.fetchMetadata()
        #expect(metadata.issuer == issuer)
        #expect(metadata.tokenEndpoint == issuer + "/token")
        #expect(server.targets == ["/.well-known/oauth-authorization-server/tenant"])
        try await server.close()
    }
}
