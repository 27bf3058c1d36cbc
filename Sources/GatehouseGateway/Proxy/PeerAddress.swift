import GatehouseConfiguration
import NIOCore

/// The socket peer as the gateway names it (`X-Forwarded-For`, `Forwarded`) and matches it against
/// `trusted_proxies`.
///
/// A dual-stack listener (`host: "::"`) reports an IPv4 client as the IPv4-mapped IPv6 address `::ffff:a.b.c.d`
/// (RFC 4291 §2.5.5.2). Both functions treat it as the IPv4 address it stands for, so that the upstream sees
/// `127.0.0.1` and a `127.0.0.1/32` entry matches, whichever way the listener was bound.
enum PeerAddress {
    /// The address in network byte order: 4 bytes for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6; nil for a
    /// Unix domain socket.
    static func addressBytes(_ address: SocketAddress) -> [UInt8]? {
        guard let bytes = socketBytes(address) else { return nil }
        return GatewayConfiguration.CIDR.mappedIPv4(bytes).map(Array.init) ?? bytes
    }

    /// The socket address's bytes as they are (16 for any IPv6 peer, mapped or not).
    static func socketBytes(_ address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4):
            let value = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            return [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
        case .v6(let v6):
            return withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default:
            return nil
        }
    }

    /// The address as text: dotted decimal for IPv4 (IPv4-mapped IPv6 included), NIO's IPv6 text otherwise,
    /// `unknown` without an IP address.
    static func peerAddressText(_ address: SocketAddress) -> String {
        if case .v6 = address, let bytes = addressBytes(address), bytes.count == 4 {
            return bytes.map { String($0) }.joined(separator: ".")
        }
        return address.ipAddress ?? "unknown"
    }
}
