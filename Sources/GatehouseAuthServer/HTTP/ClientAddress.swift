import GatehouseConfiguration
import HTTPTypes
import Hummingbird

/// The client's address for throttling and logs: the socket's peer, or — when the peer is a trusted proxy — the
/// last hop of `X-Forwarded-For` that is not itself a trusted proxy.
///
/// Why the last untrusted hop and not the first entry: every hop appends what it saw, so only the entries added by
/// trusted proxies are true; anything to the left of the first untrusted one was written by the client and
/// would let it choose its own throttle key.
enum ClientAddress {
    /// - Parameters:
    ///   - peer: the socket's peer address, as NIO writes it.
    ///   - forwardedFor: the `X-Forwarded-For` field values, in order.
    ///   - trustedProxies: the blocks whose word is believed.
    static func resolve(peer: String, forwardedFor: [String], trustedProxies: [CIDR]) -> String {
        guard !trustedProxies.isEmpty, let peerBytes = CIDR.parseAddress(peer) else { return peer }
        func isTrusted(_ bytes: [UInt8]) -> Bool { trustedProxies.contains { $0.contains(bytes) } }
        guard isTrusted(peerBytes) else { return peer }
        var client = CIDR.canonicalText(peerBytes)
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }
        for hop in hops.reversed() {
            // A malformed hop was not written by a trusted proxy: the address that hop's right-hand neighbour
            // vouched for is the best known.
            guard let bytes = address(of: hop) else { return client }
            client = CIDR.canonicalText(bytes)
            if !isTrusted(bytes) { return client }
        }
        return client
    }

    /// The address in one `X-Forwarded-For` element: `a.b.c.d`, an IPv6 address, `a.b.c.d:port` or `[v6]:port`.
    static func address(of element: Substring) -> [UInt8]? {
        let text = element.trimmingSpaces
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            return CIDR.parseAddress(String(text[text.index(after: text.startIndex)..<close]))
        }
        if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            return CIDR.parseAddress(String(text[..<colon]))
        }
        return CIDR.parseAddress(String(text))
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = drop { $0 == " " || $0 == "\t" }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}

/// Replaces the context's `remoteAddress` with the client's address (`ClientAddress`) before anything reads it:
/// the login throttle, client-authentication throttling and the access log.
struct ClientAddressMiddleware: RouterMiddleware {
    typealias Context = AuthRequestContext
    let trustedProxies: [CIDR]

    func handle(_ request: Request, context: AuthRequestContext, next: (Request, AuthRequestContext) async throws -> Response) async throws -> Response {
        guard !trustedProxies.isEmpty else { return try await next(request, context) }
        var context = context
        context.remoteAddress = ClientAddress.resolve(peer: context.peerAddress, forwardedFor: request.headers[values: .xForwardedFor], trustedProxies: trustedProxies)
        return try await next(request, context)
    }
}

extension HTTPField.Name {
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
}
