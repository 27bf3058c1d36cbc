import Crypto
import CryptoExtras
import Foundation
import JWTKit

/// The JWS algorithms Gatehouse signs with. Symmetric algorithms are deliberately absent.
public enum SigningAlgorithm: String, Sendable, CaseIterable, Codable {
    case es256 = "ES256"
    case rs256 = "RS256"
    case edDSA = "EdDSA"
}

/// A private signing key and its public JWK. The key id is the RFC 7638 thumbprint of the public key, so the
/// same key always has the same `kid` and two different keys never share one.
public struct SigningKey: Sendable, Equatable {
    public let algorithm: SigningAlgorithm
    /// PKCS#8 / SEC1 PEM of the private key (kept in files readable only by the owner).
    public let privateKeyPEM: String
    /// The public key's RFC 7638 required members (`kty`, `crv`, `x`, `y` / `n`, `e`).
    public let publicMembers: [String: String]
    /// RFC 7638 thumbprint of the public key.
    public let kid: String

    /// Generates a new key.
    public static func generate(_ algorithm: SigningAlgorithm) throws -> SigningKey {
        switch algorithm {
        case .es256:
            return try SigningKey(algorithm: algorithm, privateKeyPEM: ES256PrivateKey().pemRepresentation)
        case .edDSA:
            return try SigningKey(algorithm: algorithm, privateKeyPEM: EdDSA.PrivateKey(backing: Curve25519.Signing.PrivateKey()).pemRepresentation)
        case .rs256:
            let backing = try _RSA.Signing.PrivateKey(keySize: .bits2048)
            return try SigningKey(algorithm: algorithm, privateKeyPEM: backing.pemRepresentation)
        }
    }

    /// Loads a key from its PEM; derives the public members and the kid.
    public init(algorithm: SigningAlgorithm, privateKeyPEM: String) throws {
        self.algorithm = algorithm
        self.privateKeyPEM = privateKeyPEM
        switch algorithm {
        case .es256:
            let key = try ES256PrivateKey(pem: privateKeyPEM)
            guard let parameters = key.parameters else { throw JOSEError(.invalidKey, "P-256 key without coordinates") }
            publicMembers = ["kty": "EC", "crv": "P-256", "x": parameters.x, "y": parameters.y]
        case .edDSA:
            let key = try EdDSA.PrivateKey(pem: privateKeyPEM)
            publicMembers = ["kty": "OKP", "crv": "Ed25519", "x": Base64URL.encode(key.publicKey.rawRepresentation)]
        case .rs256:
            let key = try _RSA.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
            guard key.keySizeInBits >= 2048 else { throw JOSEError(.invalidKey, "RSA keys must have at least 2048 bits") }
            let primitives = try key.publicKey.getKeyPrimitives()
            publicMembers = ["kty": "RSA", "n": Base64URL.encode(primitives.modulus), "e": Base64URL.encode(primitives.publicExponent)]
        }
        guard let kid = JWKThumbprint.compute(publicMembers) else { throw JOSEError(.invalidKey, "cannot compute the key's thumbprint") }
        self.kid = kid
    }

    /// The public JWK as a JSON object (`kid`, `use: sig`, `alg` and the key members).
    public var publicJWK: String {
        var members = publicMembers
        members["kid"] = kid
        members["use"] = "sig"
        members["alg"] = algorithm.rawValue
        let ordered = ["kty", "kid", "use", "alg", "crv", "x", "y", "n", "e"].compactMap { name in members[name].map { (name, $0) } }
        return "{" + ordered.map { "\"\($0.0)\":\"\($0.1)\"" }.joined(separator: ",") + "}"
    }

    /// Adds the private key to a jwt-kit key collection under its kid.
    public func register(in keys: JWTKeyCollection) async throws {
        switch algorithm {
        case .es256: await keys.add(ecdsa: try ES256PrivateKey(pem: privateKeyPEM), kid: JWKIdentifier(string: kid))
        case .edDSA: await keys.add(eddsa: try EdDSA.PrivateKey(pem: privateKeyPEM), kid: JWKIdentifier(string: kid))
        case .rs256:
            let key = try Insecure.RSA.PrivateKey(pem: privateKeyPEM)
            await keys.add(rsa: key, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        }
    }
}

/// A JOSE failure: bad key material, or a token that does not verify.
public struct JOSEError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case invalidKey
        case malformed
        case algorithmNotAllowed
        case unknownKey
        case badSignature
        case wrongType
        case expired
        case notYetValid
        case wrongIssuer
        case wrongAudience
        /// No key set could be obtained (the authorization server is unreachable): not the token's fault.
        case keySetUnavailable
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
    public static func == (lhs: JOSEError, rhs: JOSEError) -> Bool { lhs.code == rhs.code }
}
