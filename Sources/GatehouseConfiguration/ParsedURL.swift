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
    public var isLoopback: Bool {
        host == "localhost" || host == "[::1]" || host.hasPrefix("127.")
    }
}
