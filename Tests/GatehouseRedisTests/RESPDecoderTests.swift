import NIOCore
import NIOEmbedded
import Testing

@testable import GatehouseRedis

/// Every RESP2 and RESP3 type, from the examples of the specification (redis-specifications protocol/RESP3.md
/// and the RESP2 page), decoded whole and split at every possible byte.
@Suite struct RESPDecoderTests {
    static let examples: [(wire: String, value: RESPValue)] = [
        ("+hello world\r\n", .simpleString("hello world")),
        ("-ERR this is the error description\r\n", .error("ERR this is the error description")),
        (":1234\r\n", .integer(1234)),
        (":-42\r\n", .integer(-42)),
        ("$11\r\nhello world\r\n", .bulkString(ByteBuffer(string: "hello world"))),
        ("$0\r\n\r\n", .bulkString(ByteBuffer())),
        ("$-1\r\n", .null),  // RESP2 null bulk string
        ("*-1\r\n", .null),  // RESP2 null array
        ("*0\r\n", .array([])),
        ("*3\r\n:1\r\n:2\r\n:3\r\n", .array([.integer(1), .integer(2), .integer(3)])),
        ("*2\r\n*3\r\n:1\r\n$5\r\nhello\r\n:2\r\n#f\r\n", .array([.array([.integer(1), .bulkString(ByteBuffer(string: "hello")), .integer(2)]), .boolean(false)])),
        ("*2\r\n$3\r\nfoo\r\n$-1\r\n", .array([.bulkString(ByteBuffer(string: "foo")), .null])),
        ("_\r\n", .null),
        (",1.23\r\n", .double(1.23)),
        (",10\r\n", .double(10)),
        (",inf\r\n", .double(.infinity)),
        (",-inf\r\n", .double(-.infinity)),
        (",nan\r\n", .double(.nan)),
        (",1.5e3\r\n", .double(1500)),
        ("#t\r\n", .boolean(true)),
        ("#f\r\n", .boolean(false)),
        ("!21\r\nSYNTAX invalid syntax\r\n", .error("SYNTAX invalid syntax")),
        ("=15\r\ntxt:Some string\r\n", .verbatimString(format: "txt", text: "Some string")),
        ("(3492890328409238509324850943850943825024385\r\n", .bigNumber("3492890328409238509324850943850943825024385")),
        ("%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", .map([
            RESPMapEntry(key: .simpleString("first"), value: .integer(1)), RESPMapEntry(key: .simpleString("second"), value: .integer(2)),
        ])),
        ("~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n", .set([.simpleString("orange"), .simpleString("apple"), .boolean(true), .integer(100), .integer(999)])),
        // An attribute is auxiliary data: the reply is the array after it.
        ("|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n", .array([.integer(2039123), .integer(9543892)])),
        (">4\r\n+pubsub\r\n+message\r\n+somechannel\r\n+this is the message\r\n", .push([
            .simpleString("pubsub"), .simpleString("message"), .simpleString("somechannel"), .simpleString("this is the message"),
        ])),
    ]

    @Test(arguments: 0..<examples.count)
    func specExampleDecodesWholeAndAtEverySplit(index: Int) throws {
        let (wire, expected) = Self.examples[index]
        let bytes = Array(wire.utf8)
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<split])
            let early = try RESPDecoder.parse(&buffer)
            if split < bytes.count {
                #expect(early == nil, "split \(split) of \(wire.debugDescription) decoded early")
                #expect(buffer.readerIndex == 0, "an incomplete reply must consume nothing")
                buffer.writeBytes(bytes[split...])
                let value = try RESPDecoder.parse(&buffer)
                #expect(value == expected, "split \(split) of \(wire.debugDescription)")
            } else {
                #expect(early == expected)
            }
            #expect(buffer.readableBytes == 0)
        }
    }

    /// All examples back to back through a real `ByteToMessageHandler`, fed one byte per read.
    @Test func pipelineOfAllExamplesFedByteByByte() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
        let wire = Self.examples.map(\.wire).joined()
        for byte in wire.utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        var decoded: [RESPValue] = []
        while let value = try channel.readInbound(as: RESPValue.self) { decoded.append(value) }
        #expect(decoded == Self.examples.map(\.value))
        #expect(try channel.finish().isClean)
    }

    @Test(arguments: [
        "?foo\r\n", ":12a\r\n", "$3\r\nfoobar\r\n", "#x\r\n", ",0x1p3\r\n", "+a\rb\r\n", "$-2\r\n", "%-1\r\n", "$?\r\n", "=2\r\nab\r\n", "(12.5\r\n",
    ])
    func malformedInputIsAProtocolError(wire: String) {
        var buffer = ByteBuffer(string: wire)
        let error = #expect(throws: RedisError.self) { _ = try RESPDecoder.parse(&buffer) }
        #expect(error?.code == .protocol)
    }

    @Test func nestingBeyondTheLimitIsRefused() {
        var buffer = ByteBuffer(string: String(repeating: "*1\r\n", count: RESPDecoder.maximumDepth + 2) + ":1\r\n")
        #expect(throws: RedisError(code: .protocol, message: "")) { _ = try RESPDecoder.parse(&buffer) }
        var within = ByteBuffer(string: String(repeating: "*1\r\n", count: RESPDecoder.maximumDepth) + ":1\r\n")
        #expect(throws: Never.self) { _ = try RESPDecoder.parse(&within) }
    }

    @Test func commandsAreArraysOfBulkStrings() {
        var buffer = ByteBuffer()
        let command: RedisCommand = ["SET", "mykey", "héllo", ""]
        command.encode(into: &buffer)
        #expect(String(buffer: buffer) == "*4\r\n$3\r\nSET\r\n$5\r\nmykey\r\n$6\r\nhéllo\r\n$0\r\n\r\n")
        #expect(buffer.readableBytes == command.encodedLength)
        var long = ByteBuffer()
        let big = RedisCommand(Array(repeating: "x", count: 12) + [String(repeating: "y", count: 1234)])
        big.encode(into: &long)
        #expect(long.readableBytes == big.encodedLength)
        #expect(String(buffer: long).hasPrefix("*13\r\n$1\r\nx\r\n"))
        #expect(String(buffer: long).contains("$1234\r\nyyy"))
    }

    @Test func scriptSHA1MatchesTheKnownDigest() {
        // SHA1("return 1"), as `redis-cli SCRIPT LOAD "return 1"` prints it.
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
