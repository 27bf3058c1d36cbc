import GatehouseConfiguration
import NIOCore
import Testing

@testable import GatehouseGateway

/// The peer address on a dual-stack listener: an IPv4 client arrives as `::ffff:a.b.c.d` and must be matched and
/// named as the IPv4 address it stands for.
@Suite struct PeerAddressTests {
    static let configuration = try! GatewayConfiguration.parse(yaml: """
        listeners: [{host: "::", port: 8080}]
        trusted_proxies: [127.0.0.1/32]
        clusters: [{name: backend, targets: ['http://127.0.0.1:9']}]
        routes:
          - {match: {path_prefix: /api}, cluster: backend}
        """)

    @Test func mappedPeerIsATrustedProxy() throws {
        let gateway = GatewayCompiler().compile(Self.configuration)
        let mapped = try SocketAddress(ipAddress: "::ffff:127.0.0.1", port: 40000)
        // The bytes the data path has always read from the socket (16 of them for a mapped peer) ...
        #expect(gateway.isTrusted(PeerAddress.socketBytes(mapped)))
        // ... and the unmapped ones.
        #expect(gateway.isTrusted(PeerAddress.addressBytes(mapped)))
        #expect(gateway.isTrusted(PeerAddress.addressBytes(try SocketAddress(ipAddress: "127.0.0.1", port: 40000))))
        #expect(!gateway.isTrusted(PeerAddress.addressBytes(try SocketAddress(ipAddress: "::ffff:127.0.0.2", port: 40000))))
        #expect(!gateway.isTrusted(PeerAddress.addressBytes(try SocketAddress(ipAddress: "::1", port: 40000))))
    }

    @Test func mappedPeerIsNamedAsIPv4() throws {
        let mapped = try SocketAddress(ipAddress: "::ffff:127.0.0.1", port: 40000)
        #expect(PeerAddress.peerAddressText(mapped) == "127.0.0.1")
        #expect(PeerAddress.addressBytes(mapped) == [127, 0, 0, 1])
        let v4 = try SocketAddress(ipAddress: "203.0.113.7", port: 40000)
        #expect(PeerAddress.peerAddressText(v4) == "203.0.113.7")
        #expect(PeerAddress.addressBytes(v4) == [203, 0, 113, 7])
        let v6 = try SocketAddress(ipAddress: "2001:db8::1", port: 40000)
        #expect(PeerAddress.peerAddressText(v6) == "2001:db8::1")
        #expect(PeerAddress.addressBytes(v6) == [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1])
        // ::ffff:0:a.b.c.d (IPv4-translated) and ::a.b.c.d (deprecated IPv4-compatible) are IPv6 addresses.
        let compatible = try SocketAddress(ipAddress: "::127.0.0.1", port: 40000)
        #expect(PeerAddress.addressBytes(compatible)?.count == 16)
        #expect(PeerAddress.peerAddressText(compatible) != "127.0.0.1")
    }

    @Test func trustedBlocksMatchMappedAddresses() throws {
        let block = try #require(GatewayConfiguration.CIDR.parse("10.0.0.0/8"))
        #expect(block.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 1, 2, 3]))
        #expect(!block.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 11, 1, 2, 3]))
        #expect(!block.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 2, 3]))
    }
}
