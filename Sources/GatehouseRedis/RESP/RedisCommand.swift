import NIOCore

/// What a connection can send: a RESP array of bulk strings written straight into the write buffer.
public protocol RedisCommandEncodable: Sendable {
    /// The command's name (`GET`), for errors and logs, which never carry the arguments (they may be secrets).
    var name: String { get }
    /// The bytes `encode(into:)` appends: for sizing a buffer.
    var encodedLength: Int { get }
    func encode(into buffer: inout ByteBuffer)
}

/// A command: its name and arguments, sent as a RESP array of bulk strings (the only form a server must accept).
public struct RedisCommand: RedisCommandEncodable, ExpressibleByArrayLiteral {
    /// The name first (`GET`), then the arguments.
    public var arguments: [String]

    public init(_ arguments: [String]) {
        self.arguments = arguments
    }

    public init(arrayLiteral elements: String...) {
        self.arguments = elements
    }

    /// The command's name, upper-cased; for errors and logs, which never carry the arguments (they may be secrets).
    public var name: String { arguments.first?.uppercased() ?? "" }

    /// Appends `*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per argument.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        Self.writeDecimal(arguments.count, into: &buffer)
        for argument in arguments {
            buffer.writeInteger(UInt8(ascii: "$"))
            Self.writeDecimal(argument.utf8.count, into: &buffer)
            buffer.writeString(argument)
            buffer.writeInteger(UInt16(0x0D0A))
        }
    }

    /// The bytes `encode(into:)` appends: for sizing a buffer.
    public var encodedLength: Int {
        arguments.reduce(3 + Self.digits(arguments.count)) { $0 + 5 + Self.digits($1.utf8.count) + $1.utf8.count }
    }

    /// Writes a non-negative integer and CRLF without building a String.
    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        var divisor = 1
        while divisor <= value / 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
        buffer.writeInteger(UInt16(0x0D0A))
    }

    static func digits(_ value: Int) -> Int {
        var count = 1
        var rest = value
        while rest >= 10 { rest /= 10; count += 1 }
        return count
    }
}
