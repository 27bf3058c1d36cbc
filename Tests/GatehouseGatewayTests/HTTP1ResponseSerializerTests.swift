import NIOCore
import NIOHTTP1
import Testing

@testable import GatehouseGateway

/// The downstream response serializer frames responses as RFC 9112 §6 requires (and as NIO's encoder did).
@Suite struct HTTP1ResponseSerializerTests {
    /// Serializes a head, body parts and an end; returns the bytes and the serializer's last state.
    func serialize(
        _ status: HTTPResponseStatus, version: HTTPVersion = .http1_1, headers: [(String, String)], body: [String] = [],
        trailers: HTTPHeaders? = nil, answeringHEAD: Bool = false
    ) -> (text: String, needsClose: Bool) {
        var serializer = HTTP1ResponseSerializer()
        var buffer = ByteBuffer()
        serializer.writeHead(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(headers)), answeringHEAD: answeringHEAD, into: &buffer)
        let needsClose = serializer.needsClose
        for part in body where !serializer.suppressesBody { serializer.writeBody(ByteBuffer(string: part), into: &buffer) }
        serializer.writeEnd(trailers, into: &buffer)
        return (String(buffer: buffer), needsClose)
    }

    @Test func contentLengthResponsesPassAsTheyAre() {
        let (text, needsClose) = serialize(.ok, headers: [("Content-Length", "5"), ("X-A", "b")], body: ["hello"])
        #expect(text == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
        #expect(!needsClose)
    }

    @Test func bodiesWithoutALengthAreChunkedForHTTP11() {
        let (text, _) = serialize(.ok, headers: [("X-A", "b")], body: ["hello ", "world!!!!!!!!!!!"])
        #expect(text == "HTTP/1.1 200 OK\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n10\r\nworld!!!!!!!!!!!\r\n0\r\n\r\n")
    }

    @Test func trailersEndAChunkedBody() {
        let (text, _) = serialize(.ok, headers: [], body: ["a"], trailers: HTTPHeaders([("X-Checksum", "1")]))
        #expect(text.hasSuffix("1\r\na\r\n0\r\nX-Checksum: 1\r\n\r\n"))
    }

    @Test func http10BodiesWithoutALengthAreDelimitedByClose() {
        let (text, needsClose) = serialize(.ok, version: .http1_0, headers: [("Transfer-Encoding", "chunked")], body: ["hello"])
        #expect(text == "HTTP/1.0 200 OK\r\n\r\nhello")
        #expect(needsClose)
    }

    @Test func headResponsesKeepTheirFramingHeadersButNoBody() {
        let (chunkedHead, _) = serialize(.ok, headers: [], body: ["ignored"], answeringHEAD: true)
        #expect(chunkedHead == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")  // no body, no terminating chunk
        let (lengthHead, needsClose) = serialize(.ok, headers: [("Content-Length", "7")], answeringHEAD: true)
        #expect(lengthHead == "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
        #expect(!needsClose)
    }

    @Test func statusesWithoutABodyLoseTheirFraming() {
        for status in [HTTPResponseStatus.noContent, .notModified, .continue] {
            let (text, needsClose) = serialize(status, headers: [("Content-Length", "3"), ("Transfer-Encoding", "chunked"), ("ETag", "\"x\"")], body: ["abc"])
            #expect(text == "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\nETag: \"x\"\r\n\r\n")
            #expect(!needsClose)
        }
    }

    @Test func customReasonPhrasesAndCodesAreKept() {
        let (text, _) = serialize(HTTPResponseStatus(statusCode: 599, reasonPhrase: "Custom Thing"), headers: [("Content-Length", "0")])
        #expect(text == "HTTP/1.1 599 Custom Thing\r\nContent-Length: 0\r\n\r\n")
    }

    @Test func theSerializerResetsBetweenResponses() {
        var serializer = HTTP1ResponseSerializer()
        var buffer = ByteBuffer()
        serializer.writeHead(HTTPResponseHead(version: .http1_1, status: .ok), answeringHEAD: true, into: &buffer)
        serializer.writeEnd(nil, into: &buffer)
        #expect(!serializer.suppressesBody && !serializer.chunked)
        buffer.clear()
        serializer.writeHead(HTTPResponseHead(version: .http1_1, status: .ok), answeringHEAD: false, into: &buffer)
        serializer.writeBody(ByteBuffer(string: "x"), into: &buffer)
        serializer.writeEnd(nil, into: &buffer)
        #expect(String(buffer: buffer) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    }
}
