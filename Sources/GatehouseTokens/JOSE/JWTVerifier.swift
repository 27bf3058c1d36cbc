import Foundation
import JWTKit

/// What a JWT access token must satisfy besides its signature.
public struct JWTVerificationPolicy: Sendable, Equatable {
    /// Algorithms accepted. Never `none`, never a symmetric algorithm: they are not representable here.
    public var allowedAlgorithms: Set<SigningAlgorithm> = Set(SigningAlgorithm.allCases)
    /// Accepted `iss` values (empty: any).
    public var issuers: Set<String>
    /// Accepted audiences: the token's `aud` must contain one (empty: any).
    public var audiences: Set<String>
    /// Tolerance for `exp`, `nbf` and `iat` in seconds. Default 30.
    public var clockSkew: Int = 30
    /// The required header `typ` (RFC 9068: `at+jwt`); nil accepts any.
    public var requiredType: String? = AccessTokenClaims.type

    public init(issuers: Set<String>, audiences: Set<String>, allowedAlgorithms: Set<SigningAlgorithm> = Set(SigningAlgorithm.allCases), clockSkew: Int = 30, requiredType: String? = AccessTokenClaims.type) {
        self.issuers = issuers
        self.audiences = audiences
        self.allowedAlgorithms = allowedAlgorithms
        self.clockSkew = clockSkew
        self.requiredType = requiredType
    }
}

/// The protected header fields a verifier looks at before trusting anything else.
public struct JWSHeader: Sendable, Equatable {
    public var alg: String
    public var kid: String?
    public var typ: String?

    /// Parses the first segment of a compact JWS.
    public init(token: String) throws(JOSEError) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let bytes = Base64URL.decode(parts[0]),
            let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            let alg = object["alg"] as? String
        else {
            throw JOSEError(.malformed, "not a compact JWS with a JSON header")
        }
        self.alg = alg
        self.kid = object["kid"] as? String
        self.typ = object["typ"] as? String
    }
}

/// Verifies JWTs against a JWKS (the keys published by the authorization server).
public final class JWTVerifier: Sendable {
    private let keys: JWTKeyCollection
    /// Published kid → algorithm.
    public let published: [String: SigningAlgorithm]

    /// Builds a verifier from a JWKS document. Keys that are not asymmetric signing keys are ignored.
    public init(jwksJSON: String) async throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(jwksJSON.utf8)) as? [String: Any],
            let entries = object["keys"] as? [[String: Any]]
        else {
            throw JOSEError(.malformed, "not a JWKS document")
        }
        let keys = JWTKeyCollection()
        var published: [String: SigningAlgorithm] = [:]
        for entry in entries {
            guard let kid = entry["kid"] as? String, let kty = entry["kty"] as? String, kty != "oct",
                (entry["use"] as? String ?? "sig") == "sig"
            else { continue }
            let algorithm: SigningAlgorithm?
            if let alg = entry["alg"] as? String {
                algorithm = SigningAlgorithm(rawValue: alg)
            } else {
                algorithm = kty == "EC" ? .es256 : kty == "OKP" ? .edDSA : kty == "RSA" ? .rs256 : nil
            }
            guard let algorithm else { continue }
            var jwkObject = entry
            jwkObject["alg"] = algorithm.rawValue
            guard let data = try? JSONSerialization.data(withJSONObject: jwkObject), let jwk = try? JSONDecoder().decode(JWK.self, from: data) else { continue }
            do {
                _ = try await keys.add(jwk: jwk, isDefault: false)
                published[kid] = algorithm
            } catch {
                continue  // a key jwt-kit cannot use is not a key we verify with
            }
        }
        self.keys = keys
        self.published = published
    }

    /// Verifies the signature and header of any JWT: algorithm allowed and equal to the published key's,
    /// `kid` published, `typ` as required. Returns the decoded payload.
    public func verifySignature<Payload: JWTPayload>(_ token: String, as payload: Payload.Type, allowedAlgorithms: Set<SigningAlgorithm>, requiredType: String?) async throws(JOSEError) -> Payload {
        let header = try JWSHeader(token: token)
        guard let algorithm = SigningAlgorithm(rawValue: header.alg), allowedAlgorithms.contains(algorithm) else {
            throw JOSEError(.algorithmNotAllowed, "algorithm '\(header.alg)' is not allowed")
        }
        guard let kid = header.kid, let publishedAlgorithm = published[kid] else {
            throw JOSEError(.unknownKey, "the token's kid is not in the key set")
        }
        guard publishedAlgorithm == algorithm else {
            throw JOSEError(.algorithmNotAllowed, "the token's algorithm does not match its key's")
        }
        if let requiredType {
            let typ = header.typ?.lowercased() ?? ""
            guard typ == requiredType || typ == "application/" + requiredType else {
                throw JOSEError(.wrongType, "header typ must be \(requiredType)")
            }
        }
        do {
            return try await keys.verify(token, as: Payload.self)
        } catch {
            throw JOSEError(.badSignature, "the signature does not verify")
        }
    }

    /// Verifies an RFC 9068 access token: signature and header, then time, issuer and audience.
    public func verifyAccessToken(_ token: String, policy: JWTVerificationPolicy, now: Int) async throws(JOSEError) -> AccessTokenClaims {
        let claims = try await verifySignature(token, as: AccessTokenClaims.self, allowedAlgorithms: policy.allowedAlgorithms, requiredType: policy.requiredType)
        return try check(claims, policy: policy, now: now)
    }

    /// Time, issuer and audience of verified claims.
    func check(_ claims: AccessTokenClaims, policy: JWTVerificationPolicy, now: Int) throws(JOSEError) -> AccessTokenClaims {
        guard now < claims.exp + policy.clockSkew else { throw JOSEError(.expired, "the token has expired") }
        guard claims.nbf <= now + policy.clockSkew, claims.iat <= now + policy.clockSkew else {
            throw JOSEError(.notYetValid, "the token is not valid yet")
        }
        guard policy.issuers.isEmpty || policy.issuers.contains(claims.iss) else { throw JOSEError(.wrongIssuer, "issuer not accepted") }
        guard policy.audiences.isEmpty || claims.aud.contains(where: policy.audiences.contains) else {
            throw JOSEError(.wrongAudience, "audience not accepted")
        }
        return claims
    }
}
