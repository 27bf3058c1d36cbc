import NIOCore
import NIOHTTP1

/// One request to write on a connection, and where its answer goes.
struct PendingRequest: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var promise: EventLoopPromise<CompletedExchange>
    var sizeLimit: Int
}

/// A response, and whether the connection may carry another request.
struct CompletedExchange: Sendable {
    var response: HTTPClientResponse
    var reusable: Bool
}

/// The connection closed (or failed) before any byte of the response arrived: on a pooled connection this is the
/// server having closed it while idle, and an idempotent request may be sent again on a new one.
struct NoResponseYet: Error {
    var underlying: (any Error)?
}

/// Serves one request at a time on a keep-alive HTTP/1.1 connection: writes it, collects the response's bytes (up
/// to a size cap) and completes the request's promise at the response's end.
final class HTTPClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = PendingRequest
    typealias OutboundOut = HTTPClientRequestPart

    private var current: PendingRequest?
    private var head: HTTPResponseHead?
    /// The body's bytes, decoded once by the caller: decoding each read on its own turns a UTF-8 sequence split
    /// across reads into two replacement characters.
    private var body: ByteBuffer?
    private var requestAsksClose = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard current == nil else {
            request.promise.fail(HTTPClientError(.connectionClosed, "the connection is busy with another request"))
            promise?.fail(HTTPClientError(.connectionClosed, "busy"))
            return
        }
        current = request
        head = nil
        body = nil
        requestAsksClose = request.head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" }
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        if let body = request.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let request = current else {
            // Bytes nobody asked for: the connection is out of step, drop it.
            context.close(promise: nil)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            // 1xx interim responses are not the answer.
            if head.status.code >= 100 && head.status.code < 200 && head.status.code != 101 { return }
            self.head = head
        case .body(var buffer):
            guard (body?.readableBytes ?? 0) + buffer.readableBytes <= request.sizeLimit else {
                fail(HTTPClientError(.responseTooLarge, "response over \(request.sizeLimit) bytes"))
                context.close(promise: nil)
                return
            }
            if body == nil { body = buffer } else { body!.writeBuffer(&buffer) }
        case .end:
            guard let head else { return }
            current = nil
            let response = HTTPClientResponse(status: Int(head.status.code), headers: head.headers, body: body ?? ByteBuffer())
            self.head = nil
            self.body = nil
            request.promise.succeed(CompletedExchange(response: response, reusable: head.isKeepAlive && !requestAsksClose))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: (any Error)?) {
        guard let request = current else { return }
        current = nil
        if head == nil && body == nil && !(error is HTTPClientError) {
            request.promise.fail(NoResponseYet(underlying: error))
        } else {
            request.promise.fail(error ?? HTTPClientError(.connectionClosed, "connection closed before a complete response"))
        }
    }
}

@available(*, unavailable)
extension HTTPClientConnectionHandler: Sendable {}
