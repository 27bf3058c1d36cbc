import NIOCore
import NIOHTTP1

/// Writes HTTP/1.x responses for the downstream side: what NIO's `HTTPResponseEncoder` does, as a value the
/// downstream handler calls directly. Without a handler in between, a small response's head, body and end go out as
/// one buffer, in one pipeline write and one `write(2)`.
///
/// Framing (RFC 9112 §6): a response that cannot have a body (1xx, 204, 304) loses any `Content-Length` and
/// `Transfer-Encoding`; one with a `Content-Length` keeps it; otherwise an HTTP/1.1 response is sent chunked and an
/// HTTP/1.0 one is delimited by closing the connection (`needsClose`). A response to `HEAD` keeps the framing headers
/// a `GET` would have had but carries no body and no terminating chunk. `Transfer-Encoding` from the upstream never
/// passes (it is hop-by-hop; the upstream's chunking was undone by the decoder).
struct HTTP1ResponseSerializer {
    /// Whether the body being written is chunked.
    private(set) var chunked = false
    /// Whether body bytes are dropped (a response to HEAD, or a status without a body).
    private(set) var suppressesBody = false
    /// Whether the connection must close after this response (an HTTP/1.0 body without a length).
    private(set) var needsClose = false

    /// Appends the status line and headers.
    mutating func writeHead(_ head: HTTPResponseHead, answeringHEAD: Bool, into buffer: inout ByteBuffer) {
        let code = head.status.code
        let mayHaveBody = Self.mayHaveBody(head.status)
        let hasLength = mayHaveBody && Self.hasContentLength(head.headers)
        let isHTTP11 = Self.isHTTP11(head.version)
        let chunkedFraming = mayHaveBody && !hasLength && isHTTP11
        suppressesBody = answeringHEAD || !mayHaveBody
        chunked = chunkedFraming && !suppressesBody
        needsClose = mayHaveBody && !hasLength && !isHTTP11 && !answeringHEAD

        buffer.writeStaticString(isHTTP11 ? "HTTP/1.1 " : "HTTP/1.0 ")
        let clamped = max(0, min(code, 999))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(clamped / 100))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(clamped / 10 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(clamped % 10))
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(head.status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        for (name, value) in head.headers {
            if Self.isTransferEncoding(name) || (!mayHaveBody && Self.isContentLength(name)) { continue }
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        if chunkedFraming { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// What goes before a body part of `length` bytes (a chunk size line when chunked).
    func writeBodyPrefix(length: Int, into buffer: inout ByteBuffer) {
        guard chunked, length > 0 else { return }
        buffer.writeString(String(length, radix: 16))
        buffer.writeStaticString("\r\n")
    }

    /// What goes after a body part (the chunk's CRLF when chunked).
    func writeBodySuffix(length: Int, into buffer: inout ByteBuffer) {
        guard chunked, length > 0 else { return }
        buffer.writeStaticString("\r\n")
    }

    /// Appends a body part, framed.
    func writeBody(_ body: ByteBuffer, into buffer: inout ByteBuffer) {
        guard !suppressesBody else { return }
        var body = body
        let length = body.readableBytes
        writeBodyPrefix(length: length, into: &buffer)
        buffer.writeBuffer(&body)
        writeBodySuffix(length: length, into: &buffer)
    }

    /// Appends the end of the message (the last chunk and trailers when chunked) and resets for the next response.
    mutating func writeEnd(_ trailers: HTTPHeaders?, into buffer: inout ByteBuffer) {
        if chunked {
            buffer.writeStaticString("0\r\n")
            for (name, value) in trailers ?? [:] {
                buffer.writeString(name)
                buffer.writeStaticString(": ")
                buffer.writeString(value)
                buffer.writeStaticString("\r\n")
            }
            buffer.writeStaticString("\r\n")
        }
        chunked = false
        suppressesBody = false
    }

    /// Whether a response with this status, to a request of this version, carrying these headers, can only be
    /// delimited by closing the connection (the caller decides before the head is written, to say `Connection: close`).
    static func isCloseDelimited(status: HTTPResponseStatus, version: HTTPVersion, headers: HTTPHeaders, answeringHEAD: Bool) -> Bool {
        !isHTTP11(version) && !answeringHEAD && mayHaveBody(status) && !hasContentLength(headers)
    }

    static func mayHaveBody(_ status: HTTPResponseStatus) -> Bool {
        !(100..<200).contains(status.code) && status.code != 204 && status.code != 304
    }

    static func isHTTP11(_ version: HTTPVersion) -> Bool {
        version.major > 1 || (version.major == 1 && version.minor >= 1)
    }

    static func hasContentLength(_ headers: HTTPHeaders) -> Bool {
        headers.contains { isContentLength($0.name) }
    }

    static func isContentLength(_ name: String) -> Bool {
        name.utf8.count == 14 && HeaderHygiene.equalsIgnoringCase(name, "content-length")
    }

    static func isTransferEncoding(_ name: String) -> Bool {
        name.utf8.count == 17 && HeaderHygiene.equalsIgnoringCase(name, "transfer-encoding")
    }
}
