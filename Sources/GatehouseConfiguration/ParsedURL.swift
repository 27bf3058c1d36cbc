/// A minimal absolute-URL parser for validation (scheme, host, port, path, query, fragment).
/// Foundation's URL accepts too much for a security decision; this accepts only `http` and `https`.
public struct ParsedURL: Sendable, Equatable {
    public var scheme: String
    public var host: String
    public var port: Int?
    public var path: String
    public var query: String?
    public var fragment: String?

    public init?(_ text: String) {
        guard !text.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F }) else { return nil }
        let lowered = text.lowercased()
        let scheme: String
        if lowered.hasPrefix("http://") {
            scheme = "http"
        } else if lowered.hasPrefix("https://") {
            scheme = "https"
        } else {
            return nil
        }
        self.scheme = scheme
        var rest = text.dropFirst(scheme.count + 3)
        if let hash = rest.firstIndex(of: "#") {
            self.fragment = String(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
        } else {
            self.fragment = nil
        }
        if let question = rest.firstIndex(of: "?") {
            self.query = String(rest[rest.index(after: question)...])
            rest = rest[..<question]
        } else {
            self.query = nil
        }
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        self.path = String(rest[authorityEnd...])
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            self.host = String(authority[...close]).lowercased()
            let after = authority[authority.index(after: close)...]
            if after.isEmpty {
                self.port = nil
            } else {
                guard after.hasPrefix(":"), let port = Int(after.dropFirst()), (1...65535).contains(port) else { return nil }
                self.port = port
            }
        } else if let colon = authority.lastIndex(of: ":") {
            self.host = String(authority[..<colon]).lowercased()
            guard let port = Int(authority[authority.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            self.port = port
        } else {
            self.host = authority.lowercased()
            self.port = nil
        }
        guard !host.isEmpty else { return nil }
    }

    /// Whether the host is a loopback address or `localhost`.
    public var isLoopback: Bool { Self.isLoopbackHost(host) }

    /// Whether a URL host is loopback: `localhost`, an IPv4 address in 127.0.0.0/8 (four dotted decimal parts,
    /// no leading zeros), or the IPv6 loopback `::1` in brackets (any spelling, e.g. `[0:0:0:0:0:0:0:1]`). The
    /// address is parsed, not matched by prefix: `127.attacker.example` and `127.0.0.1.nip.io` are names that
    /// resolve wherever their owner says, so they are not loopback. The one test every caller uses (the issuer,
    /// redirect URIs, the gateway's authorization-server URL, the CLI).
    public static func isLoopbackHost(_ host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" { return true }
        if lowered.hasPrefix("[") {
            guard lowered.hasSuffix("]"), let bytes = GatewayConfiguration.CIDR.parseAddress(String(lowered.dropFirst().dropLast())),
                bytes.count == 16
            else { return false }
            return loopbackIPv6.contains(bytes) || loopbackIPv4.contains(bytes)  // ::ffff:127.x.y.z is IPv4 loopback
        }
        guard let bytes = GatewayConfiguration.CIDR.parseAddress(lowered), bytes.count == 4 else { return false }
        return loopbackIPv4.contains(bytes)
    }

    private static let loopbackIPv4 = GatewayConfiguration.CIDR(address: [127, 0, 0, 0], prefixLength: 8)!
    private static let loopbackIPv6 = GatewayConfiguration.CIDR(address: Array(repeating: 0, count: 15) + [1], prefixLength: 128)!
}
