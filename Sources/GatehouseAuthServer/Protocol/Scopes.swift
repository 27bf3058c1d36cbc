import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens

/// Scope checks shared by every grant.
enum Scopes {
    /// The scope to grant: the requested one if every token is allowed for the client; when the request names
    /// none, the client's registered default (RFC 6749 §3.3 lets the server pick one, or fail the request), and
    /// `invalid_scope` when it has none, so that leaving `scope` out never grants everything registered.
    static func resolve(requested: String?, client: ClientRecord) throws(OAuthError) -> [String] {
        guard let requested else {
            guard !client.defaultScopes.isEmpty else {
                throw OAuthError(.invalidScope, "scope is required: this client has no default scopes")
            }
            return client.defaultScopes.filter(client.scopes.contains)
        }
        let allowed = client.scopes
        guard let tokens = ScopeSyntax.parse(requested) else { throw OAuthError(.invalidScope, "the scope parameter is malformed") }
        let allowedSet = Set(allowed)
        if let unknown = tokens.first(where: { !allowedSet.contains($0) }) {
            throw OAuthError(.invalidScope, "scope '\(unknown)' is not allowed for this client")
        }
        return tokens
    }

    /// `scope` less what is no longer registered for the client (a later reduction of the registration takes
    /// effect on refresh and exchange). `invalid_scope` when nothing of a non-empty scope is left.
    static func stillRegistered(_ scope: String, registered: [String]) throws(OAuthError) -> String {
        guard !scope.isEmpty else { return scope }
        let registeredSet = Set(registered)
        let kept = scope.split(separator: " ").filter { registeredSet.contains(String($0)) }
        guard !kept.isEmpty else { throw OAuthError(.invalidScope, "none of the scopes granted is still registered for the client") }
        return kept.joined(separator: " ")
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
