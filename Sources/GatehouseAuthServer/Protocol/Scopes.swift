import GatehouseConfiguration

/// Scope checks shared by every grant.
enum Scopes {
    /// The scope to grant: the requested one if every token is allowed for the client, the client's whole
    /// registration when the request names none (RFC 6749 §3.3 lets the server pick a default).
    static func resolve(requested: String?, allowed: [String]) throws(OAuthError) -> [String] {
        guard let requested else { return allowed }
        guard let tokens = ScopeSyntax.parse(requested) else { throw OAuthError(.invalidScope, "the scope parameter is malformed") }
        let allowedSet = Set(allowed)
        if let unknown = tokens.first(where: { !allowedSet.contains($0) }) {
            throw OAuthError(.invalidScope, "scope '\(unknown)' is not allowed for this client")
        }
        return tokens
    }

    /// A narrower (or equal) scope than `granted`, for refreshes (RFC 6749 §6).
    static func narrow(requested: String?, granted: String) throws(OAuthError) -> String {
        guard let requested else { return granted }
        guard let tokens = ScopeSyntax.parse(requested) else { throw OAuthError(.invalidScope, "the scope parameter is malformed") }
        let grantedSet = Set(granted.split(separator: " ").map(String.init))
        if let extra = tokens.first(where: { !grantedSet.contains($0) }) {
            throw OAuthError(.invalidScope, "scope '\(extra)' exceeds the scope originally granted")
        }
        return tokens.joined(separator: " ")
    }
}
