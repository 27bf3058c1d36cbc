/// Opaque access and refresh tokens in split form: `base64url(id ‖ secret)`, an 8-byte row id followed by
/// 32 random bytes (54 characters).
///
/// The id lets the store find the row by a monotonically increasing primary key, so inserts append at the right
/// edge of the B-tree instead of dirtying a random page per token (which cost more than half of the token
/// endpoint's CPU with hash-keyed rows). The id is not secret; the 256 random bits are, and the row keeps only
/// SHA-256 of the whole token, compared in constant time on lookup.
public struct TokenLocator: Sendable, Equatable, Hashable {
    /// The row id.
    public let id: Int64
    /// base64url(SHA-256(token)), as stored.
    public let hash: String

    /// Parses a presented token; nil when it is not a well-formed split token.
    public init?(token: String) {
        guard token.utf8.count == 54, let bytes = Base64URL.decode(token), bytes.count == 40 else { return nil }
        var id: UInt64 = 0
        for byte in bytes[0..<8] { id = id << 8 | UInt64(byte) }
        guard id > 0, id <= UInt64(Int64.max) else { return nil }
        self.id = Int64(id)
        self.hash = SecureToken.hash(token)
    }

    public init(id: Int64, hash: String) {
        self.id = id
        self.hash = hash
    }

    /// A new token for row `id`, and its locator.
    public static func make(id: Int64) -> (token: String, locator: TokenLocator) {
        precondition(id > 0)
        var bytes = [UInt8](repeating: 0, count: 40)
        for index in 0..<8 { bytes[index] = UInt8(truncatingIfNeeded: UInt64(id) >> (56 - 8 * index)) }
        SecureToken.fillRandom(&bytes[8...])
        let token = Base64URL.encode(bytes)
        return (token, TokenLocator(id: id, hash: SecureToken.hash(token)))
    }
}
