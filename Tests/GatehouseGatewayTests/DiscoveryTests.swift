import GatehouseServiceAuth
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import GatehouseGateway

/// RFC 8414 discovery against a local server, and the HTTP client's decoding of what it reads.
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

    /// A two-byte character split across two reads (two chunks, flushed apart) decodes as the character, not as two
    /// replacement characters.
    @Test func aCharacterSplitAcrossReadsIsDecodedWhole() async throws {
        let body = "café ünïcödé ✓"
        let bytes = Array(body.utf8)
        let split = bytes.firstIndex(of: 0xC3)! + 1  // between the two bytes of é
        let server = try await ScriptedHTTPServer { _, _ in
            let first = Array(bytes[..<split]), second = Array(bytes[split...])
            return [
                Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".utf8),
                Array(String(first.count, radix: 16).utf8) + Array("\r\n".utf8) + first + Array("\r\n".utf8),
                Array(String(second.count, radix: 16).utf8) + Array("\r\n".utf8) + second + Array("\r\n0\r\n\r\n".utf8),
            ]
        }
        let response = try await SimpleHTTPClient.send(
            host: "127.0.0.1", port: server.port, method: .GET, path: "/text", headers: [:], body: nil, timeout: .seconds(5),
            group: MultiThreadedEventLoopGroup.singleton
        )
        #expect(response.status == 200)
        #expect(response.body == body)
        try await server.close()
    }
}
