import JWTKit

/// The claims of a JWT access token in the RFC 9068 profile (header `typ: at+jwt`).
public struct AccessTokenClaims: JWTPayload, Equatable {
    public var iss: String
    /// The user, or the client for client_credentials tokens.
    public var sub: String
    public var aud: [String]
    public var exp: Int
    public var iat: Int
    public var nbf: Int
    public var jti: String
    public var client_id: String
    /// Space-separated scopes.
    public var scope: String?
    /// When the user authenticated, for tokens issued after a sign-in.
    public var auth_time: Int?
    /// RFC 8693 §4.1 actor claim: set on the JWTs token exchange mints, naming the client that exchanged the token
    /// (the gateway). Such a JWT stands for a client's token on its way to a backend; it is never a credential a
    /// client may present at the gateway's front door (the gateway refuses every JWT that carries `act`).
    public var act: Actor?

    /// The acting party of a delegated token (RFC 8693 §4.1).
    public struct Actor: Codable, Equatable, Sendable {
        public var sub: String
        public init(sub: String) { self.sub = sub }
    }

    public init(
        iss: String, sub: String, aud: [String], exp: Int, iat: Int, nbf: Int, jti: String, client_id: String, scope: String?, auth_time: Int?,
        act: Actor? = nil
    ) {
        self.iss = iss
        self.sub = sub
        self.aud = aud
        self.exp = exp
        self.iat = iat
        self.nbf = nbf
        self.jti = jti
        self.client_id = client_id
        self.scope = scope
        self.auth_time = auth_time
        self.act = act
    }

    /// The header `typ` of RFC 9068 access tokens.
    public static let type = "at+jwt"

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, exp, iat, nbf, jti, client_id, scope, auth_time, act
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        iss = try container.decode(String.self, forKey: .iss)
        sub = try container.decode(String.self, forKey: .sub)
        // `aud` is a string or an array of strings (RFC 7519 §4.1.3).
        if let single = try? container.decode(String.self, forKey: .aud) {
            aud = [single]
        } else {
            aud = try container.decode([String].self, forKey: .aud)
        }
        exp = try container.decode(Int.self, forKey: .exp)
        iat = try container.decode(Int.self, forKey: .iat)
        nbf = try container.decodeIfPresent(Int.self, forKey: .nbf) ?? iat
        jti = try container.decode(String.self, forKey: .jti)
        client_id = try container.decode(String.self, forKey: .client_id)
        scope = try container.decodeIfPresent(String.self, forKey: .scope)
        auth_time = try container.decodeIfPresent(Int.self, forKey: .auth_time)
        act = try container.decodeIfPresent(Actor.self, forKey: .act)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(iss, forKey: .iss)
        try container.encode(sub, forKey: .sub)
        if aud.count == 1 { try container.encode(aud[0], forKey: .aud) } else { try container.encode(aud, forKey: .aud) }
        try container.encode(exp, forKey: .exp)
        try container.encode(iat, forKey: .iat)
        try container.encode(nbf, forKey: .nbf)
        try container.encode(jti, forKey: .jti)
        try container.encode(client_id, forKey: .client_id)
        try container.encodeIfPresent(scope, forKey: .scope)
        try container.encodeIfPresent(auth_time, forKey: .auth_time)
        try container.encodeIfPresent(act, forKey: .act)
    }

    /// Time, issuer and audience are checked by `JWTVerifier` with its injected clock and policy.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}

    /// The scopes as a set.
    public var scopes: Set<String> { Set((scope ?? "").split(separator: " ").map(String.init)) }
}
