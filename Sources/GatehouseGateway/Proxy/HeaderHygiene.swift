import NIOHTTP1

/// Header rewriting on the way through the gateway (RFC 9110 §7.6.1, RFC 7239).
///
/// Request: hop-by-hop headers go (`Connection` and every header it names, `Keep-Alive`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade` unless this is an upgrade, `Proxy-*`); `X-Forwarded-For` is appended to when the
/// peer is a trusted proxy and replaced otherwise; `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` are kept
/// from trusted proxies and overwritten from anyone else; `Via` is appended; `X-Request-Id` is set.
/// Response: hop-by-hop headers go and `Via` is appended.
public enum HeaderHygiene {
    /// Lower-cased names that never cross a proxy.
    static let hopByHop: Set<String> = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection", "proxy-authenticate", "proxy-authorization"]

    /// What the gateway knows about the downstream connection.
    public struct Peer: Sendable {
        /// The socket peer's address as text (`127.0.0.1`, `::1`).
        public var address: String
        /// Whether that address is a configured trusted proxy.
        public var isTrustedProxy: Bool
        /// `http` or `https` (the listener's scheme).
        public var scheme: String

        public init(address: String, isTrustedProxy: Bool, scheme: String) {
            self.address = address
            self.isTrustedProxy = isTrustedProxy
            self.scheme = scheme
        }
    }

    /// Removes hop-by-hop headers in place. With `keepUpgrade`, `Connection: upgrade` and `Upgrade` survive (tunnels).
    public static func stripHopByHop(_ headers: inout HTTPHeaders, keepUpgrade: Bool = false) {
        var needsRemoval = false
        for header in headers where isHopByHop(header.name) {
            needsRemoval = true
            break
        }
        guard needsRemoval else { return }
        var named: [String] = []
        for value in headers[canonicalForm: "connection"] {
            let token = value.lowercased()
            if !(keepUpgrade && token == "upgrade") { named.append(token) }
        }
        var kept = HTTPHeaders()
        kept.reserveCapacity(headers.count)
        for (name, value) in headers {
            let lowered = name.lowercased()
            if keepUpgrade && (lowered == "upgrade" || lowered == "connection") { continue }
            if hopByHop.contains(lowered) || lowered.hasPrefix("proxy-") || named.contains(lowered) { continue }
            kept.add(name: name, value: value)
        }
        if keepUpgrade {
            kept.add(name: "Connection", value: "upgrade")
            for value in headers["upgrade"] { kept.add(name: "Upgrade", value: value) }
        }
        headers = kept
    }

    /// ASCII case-insensitive check without allocating (runs for every header of every request).
    static func isHopByHop(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard utf8.count >= 2, utf8.count <= 19 else { return false }
        switch utf8.first! | 0x20 {
        case UInt8(ascii: "c"): return equalsIgnoringCase(name, "connection")
        case UInt8(ascii: "k"): return equalsIgnoringCase(name, "keep-alive")
        case UInt8(ascii: "t"): return equalsIgnoringCase(name, "te") || equalsIgnoringCase(name, "trailer") || equalsIgnoringCase(name, "transfer-encoding")
        case UInt8(ascii: "u"): return equalsIgnoringCase(name, "upgrade")
        case UInt8(ascii: "p"): return hasPrefixIgnoringCase(name, "proxy-")
        default: return false
        }
    }

    static func equalsIgnoringCase(_ name: String, _ lowercase: StaticString) -> Bool {
        let utf8 = name.utf8
        guard utf8.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            var index = 0
            for byte in utf8 {
                if byte | 0x20 != expected[index] && byte != expected[index] { return false }
                index += 1
            }
            return true
        }
    }

    static func hasPrefixIgnoringCase(_ name: String, _ lowercase: StaticString) -> Bool {
        let utf8 = name.utf8
        guard utf8.count >= lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            var index = 0
            for byte in utf8.prefix(expected.count) {
                if byte | 0x20 != expected[index] && byte != expected[index] { return false }
                index += 1
            }
            return true
        }
    }

    /// Rewrites a request head's headers for the upstream.
    public static func prepareRequest(_ headers: inout HTTPHeaders, peer: Peer, requestID: String, via: String, isUpgrade: Bool, forwarded precomputed: String? = nil) {
        stripHopByHop(&headers, keepUpgrade: isUpgrade)
        let originalHost = headers.first(name: "host")
        if peer.isTrustedProxy {
            let prior = headers[canonicalForm: "x-forwarded-for"].joined(separator: ", ")
            headers.replaceOrAdd(name: "X-Forwarded-For", value: prior.isEmpty ? peer.address : prior + ", " + peer.address)
            if !headers.contains(name: "x-forwarded-proto") { headers.add(name: "X-Forwarded-Proto", value: peer.scheme) }
            if !headers.contains(name: "x-forwarded-host"), let originalHost { headers.add(name: "X-Forwarded-Host", value: originalHost) }
            let forwarded = precomputed ?? forwardedElement(peer: peer, host: originalHost)
            if let prior = headers.first(name: "forwarded") {
                headers.replaceOrAdd(name: "Forwarded", value: prior + ", " + forwarded)
            } else {
                headers.add(name: "Forwarded", value: forwarded)
            }
        } else {
            headers.replaceOrAdd(name: "X-Forwarded-For", value: peer.address)
            headers.replaceOrAdd(name: "X-Forwarded-Proto", value: peer.scheme)
            if let originalHost { headers.replaceOrAdd(name: "X-Forwarded-Host", value: originalHost) } else { headers.remove(name: "x-forwarded-host") }
            headers.replaceOrAdd(name: "Forwarded", value: precomputed ?? forwardedElement(peer: peer, host: originalHost))
        }
        appendVia(&headers, via)
        headers.replaceOrAdd(name: "X-Request-Id", value: requestID)
    }

    /// Rewrites a response head's headers for the downstream.
    public static func prepareResponse(_ headers: inout HTTPHeaders, via: String, requestID: String, isUpgrade: Bool) {
        stripHopByHop(&headers, keepUpgrade: isUpgrade)
        appendVia(&headers, via)
        headers.replaceOrAdd(name: "X-Request-Id", value: requestID)
    }

    static func appendVia(_ headers: inout HTTPHeaders, _ via: String) {
        if let prior = headers.first(name: "via") {
            headers.replaceOrAdd(name: "Via", value: prior + ", " + via)
        } else {
            headers.add(name: "Via", value: via)
        }
    }

    /// One RFC 7239 element: `for=…;proto=…;host=…`, IPv6 addresses quoted and bracketed.
    static func forwardedElement(peer: Peer, host: String?) -> String {
        let node = peer.address.contains(":") ? "\"[\(peer.address)]\"" : peer.address
        var element = "for=\(node);proto=\(peer.scheme)"
        if let host, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: ";") && $0 != UInt8(ascii: ",") }) {
            element += ";host=\"\(host)\""
        }
        return element
    }
}
