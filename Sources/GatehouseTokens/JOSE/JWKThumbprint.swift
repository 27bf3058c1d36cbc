import Crypto

/// JWK thumbprints (RFC 7638): SHA-256 over the key's required members in lexicographic order, no whitespace.
public enum JWKThumbprint {
    /// The required members per key type (RFC 7638 §3.2, RFC 8037 §2 for OKP).
    public static let requiredMembers: [String: [String]] = [
        "EC": ["crv", "kty", "x", "y"],
        "RSA": ["e", "kty", "n"],
        "OKP": ["crv", "kty", "x"],
    ]

    /// base64url(SHA-256(canonical JSON)), or nil when `kty` is unknown or a required member is missing.
    public static func compute(_ members: [String: String]) -> String? {
        guard let kty = members["kty"], let required = requiredMembers[kty] else { return nil }
        var json = "{"
        for (index, name) in required.enumerated() {
            guard let value = members[name] else { return nil }
            if index > 0 { json += "," }
            json += "\"\(name)\":\"\(value)\""  // members are base64url or fixed names: nothing to escape
        }
        json += "}"
        return Base64URL.encode(SHA256.hash(data: Array(json.utf8)))
    }
}
