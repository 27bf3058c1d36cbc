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
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "http2-settings",
    ]

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

    /// Lower-cased header names listed in `Connection` that are not hop-by-hop anyway (usually none: the common
    /// values `keep-alive`, `close` and `upgrade` allocate nothing).
    static func connectionNamedHeaders(_ headers: HTTPHeaders) -> [String] {
        var named: [String] = []
        for (name, value) in headers where equalsIgnoringCase(name, "connection") {
            if equalsIgnoringCase(value, "keep-alive") || equalsIgnoringCase(value, "close") { continue }  // nearly always
            for token in value.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
                var slice = token[...]
                while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
                while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
                guard !slice.isEmpty, let text = String(slice) else { continue }
                if isHopByHop(text) || equalsIgnoringCase(text, "close") { continue }
                named.append(text.lowercased())
            }
        }
        return named
    }

    /// The first token of a `Connection` value that names a header no hop may drop: the framing headers (the
    /// gateway decides the upstream's framing from what it forwards; a client that nominates them is trying to make
    /// two hops read one body differently) and `Host`. Nil when there is none.
    ///
    /// Such a request is refused with 400 rather than the nomination ignored: no client has a reason to send it, so
    /// it is an attack signature, and refusing it also protects a chain in which another proxy in front of or behind
    /// the gateway would honour it. Nominations of the headers the gateway sets itself (`X-Forwarded-*`, `Forwarded`,
    /// `Via`, `X-Request-Id`, the token header) are ignored instead: the gateway writes its own values whatever the
    /// client's `Connection` says, so the nomination cannot change what the upstream receives.
    static func forbiddenConnectionNomination(_ value: String) -> String? {
        if equalsIgnoringCase(value, "keep-alive") || equalsIgnoringCase(value, "close") || equalsIgnoringCase(value, "upgrade") { return nil }
        return connectionTokens(value).first {
            equalsIgnoringCase($0, "content-length") || equalsIgnoringCase($0, "transfer-encoding") || equalsIgnoringCase($0, "host")
        }
    }

    /// The comma-separated tokens of a `Connection` value, without surrounding whitespace.
    static func connectionTokens(_ value: String) -> [String] {
        value.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true).compactMap { token in
            var slice = token[...]
            while let first = slice.first, first == 0x20 || first == 0x09 { slice = slice.dropFirst() }
            while let last = slice.last, last == 0x20 || last == 0x09 { slice = slice.dropLast() }
            return slice.isEmpty ? nil : String(slice)
        }
    }

    fileprivate static func isNamed(_ name: String, _ named: [String]) -> Bool {
        guard !named.isEmpty else { return false }
        let lowered = name.lowercased()
        return named.contains(lowered)
    }

    /// The headers the gateway manages, recognised in one pass.
    fileprivate enum ManagedHeader {
        case none, hopByHop, upgrade, host, contentLength, xForwardedFor, xForwardedProto, xForwardedHost, forwarded, via, requestID
        /// `traceparent`, `tracestate`, `b3`, `X-B3-*`, `X-Amzn-Trace-Id`: the gateway sends its own (the client's
        /// are never forwarded: their span id is not the parent of what the upstream does).
        case traceContext
        /// `traceresponse`: the gateway answers with its own server span.
        case traceResponse
    }

    fileprivate static func classifyHeader(_ name: String) -> ManagedHeader {
        let utf8 = name.utf8
        switch (utf8.count, utf8.first.map { $0 | 0x20 } ?? 0) {
        case (4, UInt8(ascii: "h")): return equalsIgnoringCase(name, "host") ? .host : .none
        case (2, UInt8(ascii: "b")): return equalsIgnoringCase(name, "b3") ? .traceContext : .none
        case (10, UInt8(ascii: "t")): return equalsIgnoringCase(name, "tracestate") ? .traceContext : .none
        case (11, UInt8(ascii: "t")): return equalsIgnoringCase(name, "traceparent") ? .traceContext : .none
        case (13, UInt8(ascii: "t")): return equalsIgnoringCase(name, "traceresponse") ? .traceResponse : .none
        case (3, UInt8(ascii: "v")): return equalsIgnoringCase(name, "via") ? .via : .none
        case (9, UInt8(ascii: "f")): return equalsIgnoringCase(name, "forwarded") ? .forwarded : .none
        case (15, UInt8(ascii: "x")):
            if equalsIgnoringCase(name, "x-forwarded-for") { return .xForwardedFor }
            return equalsIgnoringCase(name, "x-amzn-trace-id") ? .traceContext : .none
        case (17, UInt8(ascii: "x")):
            if equalsIgnoringCase(name, "x-forwarded-proto") { return .xForwardedProto }
            return hasPrefixIgnoringCase(name, "x-b3-") ? .traceContext : .none
        case (16, UInt8(ascii: "x")): return equalsIgnoringCase(name, "x-forwarded-host") ? .xForwardedHost : .none
        case (12, UInt8(ascii: "x")):
            if equalsIgnoringCase(name, "x-request-id") { return .requestID }
            return hasPrefixIgnoringCase(name, "x-b3-") ? .traceContext : .none
        case (10, UInt8(ascii: "x")), (11, UInt8(ascii: "x")): return hasPrefixIgnoringCase(name, "x-b3-") ? .traceContext : .none
        case (14, UInt8(ascii: "c")): return equalsIgnoringCase(name, "content-length") ? .contentLength : .none
        case (7, UInt8(ascii: "u")): return equalsIgnoringCase(name, "upgrade") ? .upgrade : .none
        default: return isHopByHop(name) ? .hopByHop : .none
        }
    }

    /// What both directions do in their one pass: drop hop-by-hop headers and those `Connection` names, keep the
    /// `Upgrade` values of an upgrade, collect prior `Via` values, drop `X-Request-Id` (the gateway sets it).
    private struct OnePass {
        let named: [String]
        let isUpgrade: Bool
        var kept: [(String, String)] = []
        var priorVia: String?
        var upgrades: [String] = []

        init(_ source: HTTPHeaders, isUpgrade: Bool, extra: Int) {
            named = isUpgrade || source.contains(name: "connection") ? connectionNamedHeaders(source) : []
            self.isUpgrade = isUpgrade
            kept.reserveCapacity(source.count + extra)
        }

        /// Handles the headers both directions treat alike; false for the others.
        mutating func handledCommon(_ kind: ManagedHeader, _ value: String) -> Bool {
            switch kind {
            case .hopByHop, .requestID: break
            case .upgrade: if isUpgrade { upgrades.append(value) }
            case .via: priorVia = priorVia.map { $0 + ", " + value } ?? value
            default: return false
            }
            return true
        }

        mutating func keep(_ name: String, _ value: String) {
            if !isNamed(name, named) { kept.append((name, value)) }
        }

        /// `Connection: upgrade` and the `Upgrade` values for an upgrade.
        mutating func appendUpgrade() {
            kept.append(("Connection", "upgrade"))
            for value in upgrades { kept.append(("Upgrade", value)) }
        }

        mutating func appendViaAndRequestID(via: String, requestID: String) {
            kept.append(("Via", priorVia.map { $0 + ", " + via } ?? via))
            kept.append(("X-Request-Id", requestID))
        }
    }

    /// The upstream request's headers, built in one pass over the client's: hop-by-hop headers dropped, the
    /// forwarding headers, `Via` and `X-Request-Id` set (see the type's documentation), every header named in
    /// `removing` (lower-case; the client's credentials on a token-checked route) dropped, the headers `filter`
    /// drops from this peer dropped, and `adding` added.
    ///
    /// `Content-Length` is never copied: the framing header of the upstream request is the caller's decision, made
    /// from what it actually forwards (`UpstreamFraming`), never the client's.
    static func requestHeaders(
        from source: HTTPHeaders, peer: Peer, requestID: String, via: String, isUpgrade: Bool, forwarded precomputed: String? = nil,
        removing: [String] = [], adding additions: HeaderAdditions = .init(), filter: UntrustedHeaderFilter = .standard,
        host hostOverride: String? = nil
    ) -> HTTPHeaders {
        var pass = OnePass(source, isUpgrade: isUpgrade, extra: 8)
        var originalHost: String?
        var priorFor: String?
        var priorForwarded: String?
        var keptProto = false
        var keptHost = false
        for (name, value) in source {
            let kind = classifyHeader(name)
            if pass.handledCommon(kind, value) { continue }
            switch kind {
            case .contentLength, .traceContext, .traceResponse:
                continue
            case .host:
                // Never dropped (a `Connection` naming it is refused earlier). An absolute-form target's authority
                // replaces it (RFC 9112 §3.2.2).
                if originalHost == nil {
                    originalHost = hostOverride ?? value
                    pass.kept.append((name, hostOverride ?? value))
                }
                continue
            case .xForwardedFor:
                if peer.isTrustedProxy { priorFor = priorFor.map { $0 + ", " + value } ?? value }
                continue
            case .xForwardedProto:
                // A trusted proxy's value stands, whatever `Connection` names (the gateway never drops what it manages).
                guard peer.isTrustedProxy else { continue }
                keptProto = true
                pass.kept.append((name, value))
                continue
            case .xForwardedHost:
                guard peer.isTrustedProxy else { continue }
                keptHost = true
                pass.kept.append((name, value))
                continue
            case .forwarded:
                if peer.isTrustedProxy { priorForwarded = priorForwarded.map { $0 + ", " + value } ?? value }
                continue
            default:
                if !removing.isEmpty && removing.contains(where: { equalsIgnoringCase(name, lowercased: $0) }) { continue }
                if filter.drops(name, fromTrustedProxy: peer.isTrustedProxy) { continue }
            }
            pass.keep(name, value)
        }
        if isUpgrade { pass.appendUpgrade() }
        pass.kept.append(("X-Forwarded-For", priorFor.map { $0 + ", " + peer.address } ?? peer.address))
        if !keptProto { pass.kept.append(("X-Forwarded-Proto", peer.scheme)) }
        if !keptHost, let originalHost { pass.kept.append(("X-Forwarded-Host", originalHost)) }
        let forwarded = precomputed ?? forwardedElement(peer: peer, host: originalHost)
        pass.kept.append(("Forwarded", priorForwarded.map { $0 + ", " + forwarded } ?? forwarded))
        pass.appendViaAndRequestID(via: via, requestID: requestID)
        additions.forEach { pass.kept.append(($0, $1)) }
        return HTTPHeaders(pass.kept)
    }

    /// The downstream response's headers, built in one pass over the upstream's: hop-by-hop headers dropped, `Via`
    /// appended, `X-Request-Id` set, and `Connection: close` when the gateway closes after this response.
    static func responseHeaders(
        from source: HTTPHeaders, via: String, requestID: String, isUpgrade: Bool, close: Bool = false, adding additions: HeaderAdditions = .init()
    ) -> HTTPHeaders {
        var pass = OnePass(source, isUpgrade: isUpgrade, extra: 4)
        for (name, value) in source {
            let kind = classifyHeader(name)
            if pass.handledCommon(kind, value) { continue }
            if kind == .contentLength {
                pass.kept.append((name, value))  // the response's framing: never dropped by a `Connection` nomination
                continue
            }
            // The gateway's `traceresponse` names its own server span; an upstream's would name a span of the
            // upstream's. (`X-Amzn-Trace-Id` likewise: the gateway answers it when the request carried one.)
            if kind == .traceResponse || (kind == .traceContext && equalsIgnoringCase(name, "x-amzn-trace-id")) { continue }
            pass.keep(name, value)
        }
        if isUpgrade {
            pass.appendUpgrade()
        } else if close {
            pass.kept.append(("Connection", "close"))
        }
        pass.appendViaAndRequestID(via: via, requestID: requestID)
        additions.forEach { pass.kept.append(($0, $1)) }
        return HTTPHeaders(pass.kept)
    }

    /// A client's request trailers as forwarded upstream: only fields a trailer may carry. Dropped: hop-by-hop
    /// fields, framing (`Content-Length`, `Transfer-Encoding`), routing and the fields the gateway sets (`Host`,
    /// `X-Forwarded-*`, `Forwarded`, `Via`, `X-Request-Id`), credentials (`Authorization`, `Cookie`, the route's
    /// removed headers) and what `filter` drops from this peer (RFC 9110 §6.5.1: a recipient must not merge such
    /// fields from a trailer into the header section, and a backend that does would trust what the gateway checked
    /// in the header). Nil when nothing is left.
    public static func requestTrailers(_ trailers: HTTPHeaders, peer: Peer, removing: [String], filter: UntrustedHeaderFilter) -> HTTPHeaders? {
        var kept: [(String, String)] = []
        for (name, value) in trailers {
            switch classifyHeader(name) {
            case .none:
                if equalsIgnoringCase(name, "authorization") || equalsIgnoringCase(name, "cookie") || hasPrefixIgnoringCase(name, "x-forwarded-") { continue }
                if removing.contains(where: { equalsIgnoringCase(name, lowercased: $0) }) { continue }
                if filter.drops(name, fromTrustedProxy: false) { continue }
                kept.append((name, value))
            default:
                continue
            }
        }
        return kept.isEmpty ? nil : HTTPHeaders(kept)
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
        case UInt8(ascii: "h"): return equalsIgnoringCase(name, "http2-settings")
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

    /// Like `equalsIgnoringCase(_:_:)` with a lower-case `String` (configured header names).
    static func equalsIgnoringCase(_ name: String, lowercased: String) -> Bool {
        let utf8 = name.utf8
        let expected = lowercased.utf8
        guard utf8.count == expected.count else { return false }
        return zip(utf8, expected).allSatisfy { $0 == $1 || $0 | 0x20 == $1 }
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

    /// Rewrites a request head's headers for the upstream (`requestHeaders(from:…)` in place).
    public static func prepareRequest(_ headers: inout HTTPHeaders, peer: Peer, requestID: String, via: String, isUpgrade: Bool, forwarded precomputed: String? = nil) {
        headers = requestHeaders(from: headers, peer: peer, requestID: requestID, via: via, isUpgrade: isUpgrade, forwarded: precomputed)
    }

    /// Rewrites a response head's headers for the downstream (`responseHeaders(from:…)` in place).
    public static func prepareResponse(_ headers: inout HTTPHeaders, via: String, requestID: String, isUpgrade: Bool) {
        headers = responseHeaders(from: headers, via: via, requestID: requestID, isUpgrade: isUpgrade)
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
