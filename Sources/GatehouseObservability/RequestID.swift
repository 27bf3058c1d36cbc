import Synchronization

/// Request ids, one format for both servers: a random 8-character prefix, `-`, and a base-36 sequence number
/// (`k3v9q0ab-1z`). Ids only need to be unique and safe to log, not secret.
///
/// Generation takes no lock: the gateway keeps one `RequestIDGenerator` per event loop (a prefix each, so loops never
/// collide), and the authorization server, whose handlers run on any thread, uses `RequestID.shared`, an atomic
/// counter. (Before, both servers took a process-wide lock per id, in two formats.)
public enum RequestID {
    /// Whether a client-sent id is kept: 1 to 128 characters of `A-Z a-z 0-9 - . _` (safe in logs and headers).
    public static func isAcceptable(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard (1...128).contains(utf8.count) else { return false }
        return utf8.allSatisfy { byte in
            (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == 45 || byte == 46 || byte == 95
        }
    }

    /// The client's id when acceptable, else a new one from `generate`.
    @inlinable
    public static func resolve(_ presented: String?, generate: () -> String) -> String {
        if let presented, isAcceptable(presented) { return presented }
        return generate()
    }

    static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    /// Eight random characters from `alphabet`.
    public static func randomPrefix() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(decoding: (0..<8).map { _ in alphabet[Int(generator.next() % 36)] }, as: UTF8.self)
    }

    /// `prefix-<sequence in base 36>`.
    static func format(prefix: String, sequence: UInt64) -> String {
        prefix + "-" + String(sequence, radix: 36)
    }

    /// For callers on no particular thread (the authorization server): one atomic increment per id.
    public static let shared = SharedRequestIDGenerator()
}

/// A generator confined to one thread or event loop: no synchronisation at all.
public struct RequestIDGenerator: Sendable {
    public let prefix: String
    private var sequence: UInt64 = 0

    public init(prefix: String = RequestID.randomPrefix()) {
        self.prefix = prefix
    }

    public mutating func next() -> String {
        sequence &+= 1
        return RequestID.format(prefix: prefix, sequence: sequence)
    }
}

/// A generator shared across threads: an atomic counter behind one random prefix.
public final class SharedRequestIDGenerator: Sendable {
    public let prefix = RequestID.randomPrefix()
    private let sequence = Atomic<UInt64>(0)

    public func next() -> String {
        let value = sequence.wrappingAdd(1, ordering: .relaxed).newValue
        return RequestID.format(prefix: prefix, sequence: value)
    }
}
