import NIOCore

/// One reply from a Redis server, RESP2 or RESP3.
///
/// RESP2's null bulk string (`$-1`) and null array (`*-1`) and RESP3's null (`_`) all decode to `.null`: a caller
/// never has to know which protocol the connection negotiated. Attributes (`|`) are read and dropped (the spec says
/// a client may ignore them); push frames (`>`) are decoded as `.push` so the connection can tell them from replies.
public enum RESPValue: Sendable, Equatable {
    /// `+OK`.
    case simpleString(String)
    /// `-ERR ...` (simple error) or `!<len>` (RESP3 blob error): the first word is the error code.
    case error(String)
    /// `:1234`.
    case integer(Int64)
    /// `$<len>` binary-safe string.
    case bulkString(ByteBuffer)
    /// `*<n>` array.
    case array([RESPValue])
    /// `_` (RESP3), `$-1` and `*-1` (RESP2).
    case null
    /// `#t` / `#f` (RESP3).
    case boolean(Bool)
    /// `,1.23`, `,inf`, `,-inf`, `,nan` (RESP3).
    case double(Double)
    /// `(3492890328409238509324850943850943825024385` (RESP3): kept as its decimal text.
    case bigNumber(String)
    /// `=15\r\ntxt:Some string` (RESP3): the three-byte format and the text.
    case verbatimString(format: String, text: String)
    /// `%<n>` (RESP3): key/value pairs in wire order.
    case map([RESPMapEntry])
    /// `~<n>` (RESP3): elements in wire order (duplicates kept, as the spec allows a client to).
    case set([RESPValue])
    /// `><n>` (RESP3): out-of-band data (pub/sub, invalidation), never the reply to a command.
    case push([RESPValue])

    public static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case (.simpleString(let a), .simpleString(let b)), (.error(let a), .error(let b)), (.bigNumber(let a), .bigNumber(let b)):
            return a == b
        case (.integer(let a), .integer(let b)): return a == b
        case (.bulkString(let a), .bulkString(let b)): return a == b
        case (.array(let a), .array(let b)), (.set(let a), .set(let b)), (.push(let a), .push(let b)): return a == b
        case (.null, .null): return true
        case (.boolean(let a), .boolean(let b)): return a == b
        // NaN equals NaN here: equality is for tests comparing decoded replies, not arithmetic.
        case (.double(let a), .double(let b)): return a == b || (a.isNaN && b.isNaN)
        case (.verbatimString(let f1, let t1), .verbatimString(let f2, let t2)): return f1 == f2 && t1 == t2
        case (.map(let a), .map(let b)): return a == b
        default: return false
        }
    }

    /// The text of a simple, bulk or verbatim string; nil for other types.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let buffer): return String(buffer: buffer)
        case .verbatimString(_, let text): return text
        default: return nil
        }
    }

    /// An integer reply, or a string reply that is a decimal integer (Lua numbers come back as integers; `GET`
    /// of a counter as a bulk string).
    public var int64: Int64? {
        switch self {
        case .integer(let value): return value
        case .simpleString, .bulkString: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    /// The elements of an array, set or push frame.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let values), .set(let values), .push(let values): return values
        default: return nil
        }
    }
}

/// One key/value pair of a RESP3 map.
public struct RESPMapEntry: Sendable, Equatable {
    public var key: RESPValue
    public var value: RESPValue

    public init(key: RESPValue, value: RESPValue) {
        self.key = key
        self.value = value
    }
}
