import NIOCore

/// Decodes RESP2 and RESP3 replies from a byte stream, whatever the split of the bytes across reads.
///
/// A reply is parsed from the start of the buffer each time; when it is incomplete the reader index is left
/// where it was and more bytes are awaited. Re-parsing a partial aggregate costs a second pass over its
/// first elements, which is cheap for the small replies a rate limiter gets (one array of five integers).
public struct RESPDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    /// Deepest nesting of aggregates accepted: a hostile or broken peer cannot exhaust the stack.
    public static let maximumDepth = 64
    /// Largest blob accepted (Redis's own `proto-max-bulk-len` default is 512 MB).
    public static let maximumBlobLength = 512 * 1024 * 1024
    /// Most elements in one aggregate header (each costs memory before its bytes arrive).
    public static let maximumAggregateCount = 1 << 24

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try Self.parse(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }

    /// Parses one complete reply from the front of `buffer` and consumes its bytes; nil (nothing consumed) when
    /// the bytes so far end inside it.
    /// - Throws: `RedisError` with code `.protocol` on bytes that are not RESP.
    public static func parse(_ buffer: inout ByteBuffer) throws -> RESPValue? {
        var copy = buffer
        guard let value = try parseValue(&copy, depth: 0) else { return nil }
        buffer = copy
        return value
    }

    private static func parseValue(_ buffer: inout ByteBuffer, depth: Int) throws -> RESPValue? {
        guard depth <= maximumDepth else { throw RedisError.protocolViolation("replies nested deeper than \(maximumDepth)") }
        while true {
            guard let type = buffer.readInteger(as: UInt8.self) else { return nil }
            switch type {
            case UInt8(ascii: "+"):
                return try readLine(&buffer).map { .simpleString($0) }
            case UInt8(ascii: "-"):
                return try readLine(&buffer).map { .error($0) }
            case UInt8(ascii: ":"):
                guard let line = try readLine(&buffer) else { return nil }
                guard let value = Int64(line) else { throw RedisError.protocolViolation("bad integer") }
                return .integer(value)
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                guard let length = try readLength(&buffer, allowNull: type == UInt8(ascii: "$"), maximum: maximumBlobLength) else { return nil }
                guard length >= 0 else { return .null }
                guard buffer.readableBytes >= length + 2, var blob = buffer.readSlice(length: length) else { return nil }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw RedisError.protocolViolation("blob not followed by CRLF") }
                switch type {
                case UInt8(ascii: "$"): return .bulkString(blob)
                case UInt8(ascii: "!"): return .error(blob.readString(length: blob.readableBytes) ?? "")
                default:
                    guard length >= 4, let format = blob.readString(length: 3), blob.readInteger(as: UInt8.self) == UInt8(ascii: ":") else {
                        throw RedisError.protocolViolation("verbatim string without a format")
                    }
                    return .verbatimString(format: format, text: blob.readString(length: blob.readableBytes) ?? "")
                }
            case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
                guard let count = try readLength(&buffer, allowNull: type == UInt8(ascii: "*"), maximum: maximumAggregateCount) else { return nil }
                guard count >= 0 else { return .null }
                var elements: [RESPValue] = []
                elements.reserveCapacity(min(count, 1024))
                for _ in 0..<count {
                    guard let element = try parseValue(&buffer, depth: depth + 1) else { return nil }
                    elements.append(element)
                }
                switch type {
                case UInt8(ascii: "*"): return .array(elements)
                case UInt8(ascii: "~"): return .set(elements)
                default: return .push(elements)
                }
            case UInt8(ascii: "%"), UInt8(ascii: "|"):
                guard let count = try readLength(&buffer, allowNull: false, maximum: maximumAggregateCount) else { return nil }
                var entries: [RESPMapEntry] = []
                entries.reserveCapacity(min(count, 1024))
                for _ in 0..<count {
                    guard let key = try parseValue(&buffer, depth: depth + 1), let value = try parseValue(&buffer, depth: depth + 1) else {
                        return nil
                    }
                    entries.append(RESPMapEntry(key: key, value: value))
                }
                if type == UInt8(ascii: "%") { return .map(entries) }
                continue  // an attribute: auxiliary data before the reply itself, which follows
            case UInt8(ascii: "_"):
                guard let line = try readLine(&buffer) else { return nil }
                guard line.isEmpty else { throw RedisError.protocolViolation("bad null") }
                return .null
            case UInt8(ascii: "#"):
                guard let line = try readLine(&buffer) else { return nil }
                switch line {
                case "t": return .boolean(true)
                case "f": return .boolean(false)
                default: throw RedisError.protocolViolation("bad boolean")
                }
            case UInt8(ascii: ","):
                guard let line = try readLine(&buffer) else { return nil }
                return .double(try parseDouble(line))
            case UInt8(ascii: "("):
                guard let line = try readLine(&buffer) else { return nil }
                let digits = line.hasPrefix("-") || line.hasPrefix("+") ? line.dropFirst() : Substring(line)
                guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                    throw RedisError.protocolViolation("bad big number")
                }
                return .bigNumber(line)
            default:
                throw RedisError.protocolViolation("unknown type byte \(type)")
            }
        }
    }

    /// `inf`, `-inf`, `nan` (and the libc spellings older servers send: `-nan`, `NAN`), or a decimal number.
    private static func parseDouble(_ line: String) throws -> Double {
        switch line.lowercased() {
        case "inf", "+inf": return .infinity
        case "-inf": return -.infinity
        case let text where text.hasPrefix("nan") || text.hasPrefix("-nan"): return .nan
        default:
            // Swift's Double(String) also takes hex floats and "infinity"; RESP numbers are decimal only.
            guard line.utf8.allSatisfy({ ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || "+-.eE".utf8.contains($0) }),
                let value = Double(line)
            else { throw RedisError.protocolViolation("bad double") }
            return value
        }
    }

    /// The text up to CRLF, consumed with it; nil when no CRLF has arrived yet.
    private static func readLine(_ buffer: inout ByteBuffer) throws -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: 0x0D) else { return nil }
        let next = view.index(after: cr)
        guard next < view.endIndex else { return nil }
        guard view[next] == 0x0A else { throw RedisError.protocolViolation("CR not followed by LF") }
        let length = cr - view.startIndex
        let line = buffer.readString(length: length)!
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }

    /// A length line: -1 (null) when allowed, else 0...maximum.
    private static func readLength(_ buffer: inout ByteBuffer, allowNull: Bool, maximum: Int) throws -> Int? {
        guard let line = try readLine(&buffer) else { return nil }
        guard let value = Int(line), value >= (allowNull ? -1 : 0), value <= maximum else {
            throw RedisError.protocolViolation(line == "?" ? "streamed aggregates are not supported" : "bad length")
        }
        return value
    }
}
