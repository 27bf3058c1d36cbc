import Crypto

/// Opaque credentials (tokens, codes, secrets, session ids): 256-bit random values, base64url encoded,
/// stored only as their SHA-256 hash so that a leaked database reveals nothing usable.
public enum SecureToken {
    /// Number of random bytes in every generated credential (256 bits).
    public static let byteCount = 32

    /// A fresh 256-bit random value, base64url encoded (43 characters).
    public static func generate() -> String {
        var bytes = [UInt8](repeating: 0, count: byteCount)
        fillRandom(&bytes[...])
        return Base64URL.encode(bytes)
    }

    /// Fills bytes from a CSPRNG: swift-crypto's key generation (BoringSSL's RAND_bytes on Linux, seeded by the
    /// kernel), which costs no syscall per call, unlike `SystemRandomNumberGenerator`'s one per 8 bytes.
    public static func fillRandom(_ bytes: inout ArraySlice<UInt8>) {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let key = SymmetricKey(size: .bits256)
            key.withUnsafeBytes { random in
                for byte in random where offset < bytes.endIndex {
                    bytes[offset] = byte
                    offset += 1
                }
            }
        }
    }

    /// The storage key of a credential: base64url(SHA-256(value)).
    public static func hash(_ value: String) -> String {
        Base64URL.encode(SHA256.hash(data: Array(value.utf8)))
    }

    /// SHA-256 of a value as lowercase hex (the form client secret hashes take in configuration files).
    public static func sha256Hex(_ value: String) -> String {
        SHA256.hash(data: Array(value.utf8)).map { byte in
            let hex = Array("0123456789abcdef".utf8)
            return String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
        }.joined()
    }

    /// Compares two strings in time that depends only on their lengths, never on where they differ.
    public static func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.utf8)
        let right = Array(rhs.utf8)
        guard left.count == right.count else { return false }
        var difference: UInt8 = 0
        for index in left.indices { difference |= left[index] ^ right[index] }
        return difference == 0
    }
}
