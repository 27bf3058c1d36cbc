import GatehouseStore

/// The decision for a refresh-token request. Pure: no I/O.
///
/// Every use rotates the token. A rotated token presented again within the grace period still succeeds (a
/// client's concurrent refreshes, or a response lost in transit) but gets an access token only: the successor
/// issued by the first use stays the family's one live refresh token, so the family never forks into branches
/// that each rotate on undetected. After the grace, the reuse means the token leaked, so the whole family is
/// revoked (every branch: the successor and the access tokens included).
enum RefreshRotation: Equatable {
    /// First use: rotate and issue with this scope.
    case rotate(scope: String)
    /// Second use within the grace period: an access token only, with this scope, in the same family (no second
    /// refresh token: the successor already issued is the family's line).
    case reissueWithinGrace(scope: String)
    /// Reuse after the grace period: revoke the family and refuse.
    case revokeFamily(familyID: String, OAuthError)
    case refuse(OAuthError)

    static func decide(_ token: TokenRecord, clientID: String, requestedScope: String?, now: Int, grace: Int) -> RefreshRotation {
        let invalid = OAuthError(.invalidGrant, "the refresh token is invalid, expired or revoked")
        guard token.kind == .refresh, token.clientID == clientID else { return .refuse(invalid) }
        guard !token.revoked else { return .refuse(invalid) }
        guard now < token.expiresAt, now < (token.familyExpiresAt ?? Int.max) else { return .refuse(invalid) }
        let scope: String
        do {
            scope = try Scopes.narrow(requested: requestedScope, granted: token.scope)
        } catch {
            return .refuse(error)
        }
        guard let rotatedAt = token.rotatedAt else { return .rotate(scope: scope) }
        if now - rotatedAt <= grace { return .reissueWithinGrace(scope: scope) }
        guard let familyID = token.familyID else { return .refuse(invalid) }
        return .revokeFamily(familyID: familyID, OAuthError(.invalidGrant, "the refresh token was already used; its token family is revoked"))
    }
}
