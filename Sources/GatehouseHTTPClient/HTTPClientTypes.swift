import Foundation
import NIOCore
import NIOHTTP1

/// Where a request goes: scheme, host and port. Connections are pooled per origin.
public struct HTTPOrigin: Sendable, Hashable, CustomStringConvertible {
    /// `host` without brackets for IPv6 literals.
    public var host: String
    public var port: Int
    public var isTLS: Bool

    public init(host: String, port: Int, isTLS: Bool) {
        self.host = host
        self.port = port
        self.isTLS = isTLS
    }

    public var description: String { "\(isTLS ? "https" : "http")://\(host.contains(":") ? "[\(host)]" : host):\(port)" }

    /// The `Host` header value (the default port omitted).
    var hostHeader: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return port == (isTLS ? 443 : 80) ? bracketed : "\(bracketed):\(port)"
    }
}

/// One request: sent whole, answered whole.
public struct HTTPClientRequest: Sendable {
    public var origin: HTTPOrigin
    public var method: HTTPMethod
    /// The request target (origin-form): path and query, percent-encoded.
    public var path: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
    /// Whether the request may be sent again when a pooled connection turns out to have been closed by the server
    /// before it answered. Default: the method is idempotent (RFC 9110 §9.2.2).
    public var retryOnStaleConnection: Bool

    public init(origin: HTTPOrigin, method: HTTPMethod = .GET, path: String = "/", headers: HTTPHeaders = [:], body: ByteBuffer? = nil) {
        self.origin = origin
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        switch method {
        case .GET, .HEAD, .PUT, .DELETE, .OPTIONS, .TRACE: retryOnStaleConnection = true
        default: retryOnStaleConnection = false
        }
    }

    /// A request to an absolute `http://` or `https://` URL.
    public init(url: String, method: HTTPMethod = .GET, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) throws {
        let parsed = try HTTPURL(url)
        self.init(origin: parsed.origin, method: method, path: parsed.path, headers: headers, body: body)
    }
}

/// A response read whole. The body is kept as bytes; `text` decodes it once (a UTF-8 sequence split across reads
/// stays whole).
public struct HTTPClientResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    public init(status: Int, headers: HTTPHeaders, body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The body decoded as UTF-8.
    public var text: String { String(buffer: body) }
}

/// Why a request failed.
public struct HTTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidURL = "invalid_url"
        case connectFailed = "connect_failed"
        case timeout
        case responseTooLarge = "response_too_large"
        /// The connection closed before a complete response.
        case connectionClosed = "connection_closed"
        case tls
        case shutdown
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
}

/// Which certificates an `https://` server may present.
public enum HTTPClientTrust: Sendable, Hashable {
    /// The system's trust store.
    case system
    /// Only certificates issued by the CA(s) in this PEM file (a private CA).
    case caFile(String)
}

/// An absolute `http(s)://` URL split into origin and request target, without Foundation's URL parser (which
/// accepts more than it should, and is slow on Linux).
public struct HTTPURL: Sendable, Equatable {
    public var origin: HTTPOrigin
    public var path: String

    public init(origin: HTTPOrigin, path: String) {
        self.origin = origin
        self.path = path
    }

    public init(_ url: String) throws {
        let invalid = HTTPClientError(.invalidURL, "only absolute http:// and https:// URLs are supported: \(url)")
        let isTLS: Bool
        var rest: Substring
        if url.lowercased().hasPrefix("http://") {
            isTLS = false
            rest = url.dropFirst(7)
        } else if url.lowercased().hasPrefix("https://") {
            isTLS = true
            rest = url.dropFirst(8)
        } else {
            throw invalid
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        rest = rest[authorityEnd...]
        if let fragment = rest.firstIndex(of: "#") { rest = rest[..<fragment] }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var host: Substring
        var port = isTLS ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = Int(after.dropFirst()), (1...65535).contains(value) else { throw invalid }
                port = value
            } else if !after.isEmpty {
                throw invalid
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let value = Int(authority[authority.index(after: colon)...]), (1...65535).contains(value) else { throw invalid }
            port = value
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw invalid }
        origin = HTTPOrigin(host: String(host), port: port, isTLS: isTLS)
        path = rest.isEmpty ? "/" : (rest.hasPrefix("?") ? "/" + rest : String(rest))
    }
}

extension HTTPClientResponse {
    /// `max-age` of a `Cache-Control` value, in seconds.
    public static func maxAge(_ cacheControl: String?) -> Double? {
        guard let cacheControl else { return nil }
        for directive in cacheControl.split(separator: ",") {
            let parts = directive.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "max-age", let value = Double(parts[1]) { return value }
        }
        return nil
    }
}
