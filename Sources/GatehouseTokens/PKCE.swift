import Crypto

/// Proof Key for Code Exchange (RFC 7636), S256 only: `plain` offers no protection and is refused.
public enum PKCE {
    /// The only challenge method accepted.
    public static let s256 = "S256"

    /// The S256 challenge for a verifier: base64url(SHA-256(ASCII(verifier))) (RFC 7636 §4.2).
    public static func challenge(forVerifier verifier: String) -> String {
        Base64URL.encode(SHA256.hash(data: Array(verifier.utf8)))
    }

    /// Whether a string is a well-formed verifier: 43–128 characters of `[A-Z] [a-z] [0-9] - . _ ~` (RFC 7636 §4.1).
    public static func isValidVerifier(_ verifier: String) -> Bool {
        let bytes = verifier.utf8
        guard (43...128).contains(bytes.count) else { return false }
        return bytes.allSatisfy(isUnreserved)
    }

    /// Whether a string is a well-formed S256 challenge: exactly 43 base64url characters.
    public static func isValidChallenge(_ challenge: String) -> Bool {
        challenge.utf8.count == 43 && Base64URL.decode(challenge)?.count == 32
    }

    /// Whether `verifier` matches the stored S256 `challenge`, compared in constant time.
    public static func verify(verifier: String, challenge: String) -> Bool {
        isValidVerifier(verifier) && SecureToken.constantTimeEquals(Self.challenge(forVerifier: verifier), challenge)
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
