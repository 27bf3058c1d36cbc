import JWTKit

/// The payload of an RFC 9701 JWT introspection response (header `typ: token-introspection+jwt`): who answered,
/// to whom, when, and the RFC 7662 members of the token asked about.
public struct IntrospectionResponse: JWTPayload, Equatable {
    /// The members of `token_introspection` a verifier uses.
    public struct Token: Codable, Sendable, Equatable {
        public var active: Bool
        /// `Bearer` for access tokens; `refresh_token` (this server) or others for tokens that are not.
        public var token_type: String?
        public var scope: String?
        public var client_id: String?
        public var sub: String?
        public var exp: Int?
        public var iat: Int?
        public var nbf: Int?
        public var aud: [String]?
        public var iss: String?
        public var jti: String?

        enum CodingKeys: String, CodingKey {
            case active, token_type, scope, client_id, sub, exp, iat, nbf, aud, iss, jti
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            active = try container.decode(Bool.self, forKey: .active)
            token_type = try container.decodeIfPresent(String.self, forKey: .token_type)
            scope = try container.decodeIfPresent(String.self, forKey: .scope)
            client_id = try container.decodeIfPresent(String.self, forKey: .client_id)
            sub = try container.decodeIfPresent(String.self, forKey: .sub)
            exp = try container.decodeIfPresent(Int.self, forKey: .exp)
            iat = try container.decodeIfPresent(Int.self, forKey: .iat)
            nbf = try container.decodeIfPresent(Int.self, forKey: .nbf)
            if let single = try? container.decodeIfPresent(String.self, forKey: .aud) {
                aud = [single]
            } else {
                aud = try container.decodeIfPresent([String].self, forKey: .aud)
            }
            iss = try container.decodeIfPresent(String.self, forKey: .iss)
            jti = try container.decodeIfPresent(String.self, forKey: .jti)
        }
    }

    public var iss: String
    /// The client that asked (RFC 9701 §5: a string).
    public var aud: String
    public var iat: Int
    public var token_introspection: Token

    /// The header `typ` of RFC 9701 responses.
    public static let type = "token-introspection+jwt"

    public func verify(using algorithm: some JWTAlgorithm) async throws {}

    /// The introspected token as access-token claims, for the same checks a JWT access token gets; nil when the
    /// token is not active, is not an access token (a refresh token is active too, but must never open an API), or
    /// lacks the members an access token must have (exp).
    public var accessTokenClaims: AccessTokenClaims? {
        let token = token_introspection
        guard token.active, let exp = token.exp else { return nil }
        if let type = token.token_type?.lowercased(), type != "bearer", type != "access_token", type != "dpop" { return nil }
        return AccessTokenClaims(
            iss: token.iss ?? iss, sub: token.sub ?? token.client_id ?? "", aud: token.aud ?? [], exp: exp, iat: token.iat ?? iat,
            nbf: token.nbf ?? token.iat ?? iat, jti: token.jti ?? "", client_id: token.client_id ?? "", scope: token.scope, auth_time: nil
        )
    }
}

extension JWTVerifier {
    /// Verifies an RFC 9701 response: signature and `typ`, the responder (`iss` in `policy.issuers`), that it was
    /// made for `requester` when given, then the introspected token like an access token (active, time, issuer,
    /// audience). Throws `JOSEError` (`.expired` for an inactive token).
    public func verifyIntrospectionResponse(_ jwt: String, policy: JWTVerificationPolicy, requester: String?, now: Int) async throws(JOSEError) -> AccessTokenClaims {
        let response = try await verifySignature(jwt, as: IntrospectionResponse.self, allowedAlgorithms: policy.allowedAlgorithms, requiredType: IntrospectionResponse.type)
        guard policy.issuers.isEmpty || policy.issuers.contains(response.iss) else { throw JOSEError(.wrongIssuer, "responder not accepted") }
        if let requester, response.aud != requester { throw JOSEError(.wrongAudience, "the response was made for another client") }
        guard let claims = response.accessTokenClaims else { throw JOSEError(.expired, "the token is not active") }
        return try check(claims, policy: policy, now: now)
    }
}
