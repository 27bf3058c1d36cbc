import GatehouseStore
import GatehouseTokens

/// The decision for an authorization-code token request, made from what the store found. Pure: no I/O.
enum AuthorizationCodeRedemption: Equatable {
    /// Issue tokens for this code.
    case issue(AuthorizationCodeRecord)
    /// Refuse, and revoke every token of this family: the code was replayed (RFC 6749 §4.1.2).
    case refuseAndRevoke(familyID: String, OAuthError)
    /// Refuse.
    case refuse(OAuthError)

    struct Request: Equatable {
        var clientID: String
        var redirectURI: String?
        var codeVerifier: String?
    }

    static func decide(_ found: CodeRedemption, request: Request, now: Int) -> AuthorizationCodeRedemption {
        switch found {
        case .notFound:
            return .refuse(OAuthError(.invalidGrant, "the authorization code is invalid"))
        case .alreadyUsed(let record):
            guard record.clientID == request.clientID else {
                return .refuse(OAuthError(.invalidGrant, "the authorization code is invalid"))
            }
            return .refuseAndRevoke(familyID: record.familyID, OAuthError(.invalidGrant, "the authorization code was already used; tokens issued from it are revoked"))
        case .redeemed(let record):
            guard record.clientID == request.clientID else {
                return .refuse(OAuthError(.invalidGrant, "the authorization code was issued to another client"))
            }
            guard now < record.expiresAt else {
                return .refuse(OAuthError(.invalidGrant, "the authorization code has expired"))
            }
            if record.redirectURIWasGiven || request.redirectURI != nil {
                guard request.redirectURI == record.redirectURI else {
                    return .refuse(OAuthError(.invalidGrant, "redirect_uri does not match the authorization request"))
                }
            }
            switch (record.codeChallenge, request.codeVerifier) {
            case (let challenge?, let verifier?):
                guard PKCE.isValidVerifier(verifier) else {
                    return .refuse(OAuthError(.invalidGrant, "code_verifier must be 43-128 unreserved characters"))
                }
                guard PKCE.verify(verifier: verifier, challenge: challenge) else {
                    return .refuse(OAuthError(.invalidGrant, "code_verifier does not match the code_challenge"))
                }
            case (_?, nil):
                return .refuse(OAuthError(.invalidGrant, "code_verifier is required: the authorization request used PKCE"))
            case (nil, _?):
                // A verifier for a code issued without a challenge is a downgrade attempt.
                return .refuse(OAuthError(.invalidGrant, "code_verifier was sent but the authorization request had no code_challenge"))
            case (nil, nil):
                break
            }
            return .issue(record)
        }
    }
}
