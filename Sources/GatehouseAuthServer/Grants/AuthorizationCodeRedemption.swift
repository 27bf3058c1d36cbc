import GatehouseStore
import GatehouseTokens

/// The decision for an authorization-code token request, made from the code as stored before anything marks it
/// used. Pure: no I/O.
///
/// The binding (client, redirect URI, PKCE verifier) is checked first: a presentation that fails it is refused
/// and changes nothing, so that another client, a wrong verifier or a wrong redirect URI cannot burn the code
/// for the legitimate redemption. Only a presentation that passes it counts as a use; a second such use is a
/// replay and revokes what the code issued (RFC 6749 §4.1.2, RFC 9700 §4.5).
enum AuthorizationCodeRedemption: Equatable {
    /// The binding holds and the code is unused: mark it used (atomically, in the store) and issue.
    case redeem(AuthorizationCodeRecord)
    /// Refuse, and revoke every token of this family: the code was replayed by the client it was issued to,
    /// with the right binding.
    case refuseAndRevoke(familyID: String, OAuthError)
    /// Refuse; the code stays as it was.
    case refuse(OAuthError)

    struct Request: Equatable {
        var clientID: String
        var redirectURI: String?
        var codeVerifier: String?
    }

    static func decide(_ found: AuthorizationCodeRecord?, request: Request, now: Int) -> AuthorizationCodeRedemption {
        guard let record = found else {
            return .refuse(OAuthError(.invalidGrant, "the authorization code is invalid"))
        }
        guard record.clientID == request.clientID else {
            return .refuse(OAuthError(.invalidGrant, "the authorization code was issued to another client"))
        }
        if let bindingError = bindingError(record, request: request) { return .refuse(bindingError) }
        if record.usedAt != nil {
            return .refuseAndRevoke(familyID: record.familyID, replayError)
        }
        guard now < record.expiresAt else {
            return .refuse(OAuthError(.invalidGrant, "the authorization code has expired"))
        }
        return .redeem(record)
    }

    /// The answer to a replay (also to the loser of concurrent redemptions).
    static let replayError = OAuthError(.invalidGrant, "the authorization code was already used; tokens issued from it are revoked")

    /// Why the request does not match the authorization request the code came from (redirect URI, PKCE), or nil.
    private static func bindingError(_ record: AuthorizationCodeRecord, request: Request) -> OAuthError? {
        if record.redirectURIWasGiven || request.redirectURI != nil {
            guard request.redirectURI == record.redirectURI else {
                return OAuthError(.invalidGrant, "redirect_uri does not match the authorization request")
            }
        }
        switch (record.codeChallenge, request.codeVerifier) {
        case (let challenge?, let verifier?):
            guard PKCE.isValidVerifier(verifier) else {
                return OAuthError(.invalidGrant, "code_verifier must be 43-128 unreserved characters")
            }
            guard PKCE.verify(verifier: verifier, challenge: challenge) else {
                return OAuthError(.invalidGrant, "code_verifier does not match the code_challenge")
            }
        case (_?, nil):
            return OAuthError(.invalidGrant, "code_verifier is required: the authorization request used PKCE")
        case (nil, _?):
            // A verifier for a code issued without a challenge is a downgrade attempt.
            return OAuthError(.invalidGrant, "code_verifier was sent but the authorization request had no code_challenge")
        case (nil, nil):
            break
        }
        return nil
    }
}
