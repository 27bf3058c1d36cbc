import GatehouseConfiguration

/// Which client request headers never reach an upstream beyond HTTP's hop-by-hop set (`request_hygiene:`), compiled
/// once per configuration: headers that claim the client's address or rewrite the target (`X-Real-IP`,
/// `X-Original-URL`, `X-HTTP-Method-Override`, …) from peers that are not trusted proxies, and `_` look-alikes of
/// the headers the gateway sets (`X_Forwarded_For`, which CGI-style frameworks read as `X-Forwarded-For`) from
/// everyone.
///
/// Cost: one 64-bit mask test on the name's length per header; only names of a listed length are compared, and
/// only names containing `_` are rewritten (a header name without `_` costs one byte scan).
public struct UntrustedHeaderFilter: Sendable {
    /// Lower-case names removed from untrusted peers.
    let stripped: [String]
    /// Bit `n` set when some stripped name has length `n` (names of 64 bytes or more share bit 63).
    let strippedLengths: UInt64
    let underscores: GatewayConfiguration.RequestHygiene.UnderscoreHeaders
    /// Lower-case dashed names whose `_` twins are dropped (`drop_lookalikes`).
    let lookalikeTargets: Set<String>

    /// The names the gateway itself sets or drops on every request: their `_` twins are look-alikes.
    static let managedNames: [String] = [
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
        "proxy-connection", "proxy-authorization", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
        "via", "x-request-id", "authorization",
    ]

    public init(_ hygiene: GatewayConfiguration.RequestHygiene, forwardHeaders: [String] = []) {
        stripped = hygiene.stripFromUntrusted
        var lengths: UInt64 = 0
        for name in stripped { lengths |= 1 << UInt64(min(name.utf8.count, 63)) }
        strippedLengths = lengths
        underscores = hygiene.underscoreHeaders
        lookalikeTargets = Set(Self.managedNames + hygiene.stripFromUntrusted + forwardHeaders.map { $0.lowercased() })
    }

    /// The default policy (`request_hygiene:` absent).
    public static let standard = UntrustedHeaderFilter(.init())

    @inline(__always)
    static func lengthBit(_ count: Int) -> UInt64 { 1 << UInt64(min(count, 63)) }

    /// Whether a client header named `name` is dropped.
    @inline(__always)
    func drops(_ name: String, fromTrustedProxy trusted: Bool) -> Bool {
        let utf8 = name.utf8
        if !trusted && strippedLengths & Self.lengthBit(utf8.count) != 0
            && stripped.contains(where: { HeaderHygiene.equalsIgnoringCase(name, lowercased: $0) })
        {
            return true
        }
        guard underscores != .keep, utf8.contains(UInt8(ascii: "_")) else { return false }
        if underscores == .drop { return true }
        let dashed = String(decoding: utf8.map { $0 == UInt8(ascii: "_") ? UInt8(ascii: "-") : ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) }, as: UTF8.self)
        return lookalikeTargets.contains(dashed)
    }
}
