import NIOCore
import NIOHTTP1

extension DownstreamHandler {
    /// After `101 Switching Protocols`: both pipelines drop their HTTP handlers (bytes already read past the HTTP
    /// messages are passed on, not lost) and relay raw bytes to each other, until either side closes or the route's
    /// `tunnel_idle` passes without a byte.
    func startTunnel(_ exchange: Exchange) {
        guard let connection = exchange.connection else { return }
        connection.isReusable = false
        connection.handler.delegate = nil
        // The connection leaves the pool for good: release its slot now (its handler will not see the close).
        connection.handler.onClose?()
        connection.handler.onClose = nil
        finish(exchange, cause: .tunnelled, upstream: .alreadyReleased)
        let (downstreamSide, upstreamSide) = TunnelHandler.pair()
        let downstream = context.channel
        let upstream = connection.channel
        let ended = context.eventLoop.makePromise(of: Void.self)
        writeResponseEnd(nil, promise: ended)
        flushResponse()
        let idleTimeout = exchange.route.tunnelIdleTimeout
        ended.futureResult.whenComplete { _ in
            do {
                // Removals of these handlers complete synchronously, in call order. First both tunnel ends go in and
                // every HTTP encoder and handler comes out of both pipelines; only then the decoders go, handing
                // the bytes they read past the HTTP messages (early frames) to a tunnel that can pass them on.
                let down = downstream.pipeline.syncOperations
                let up = upstream.pipeline.syncOperations
                // A tunnel with no byte either way for the route's `tunnel_idle` closes (both ends: the tunnel
                // handler closes its partner). The idle handler sits in front of the tunnel end, so it sees both the
                // client's bytes and those written to it.
                try down.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                try down.addHandler(downstreamSide)
                try up.addHandler(upstreamSide)
                _ = up.removeHandler(connection.handler)
                _ = up.removeHandler(try up.handler(type: HTTPRequestEncoder.self))
                _ = down.removeHandler(try down.handler(type: RequestStartDetector.self))
                _ = down.removeHandler(self)
                // Decoder removal runs a little later (ByteToMessageHandler defers it), and the bytes it hands over
                // come without a read-complete event: flush the other side once each removal is done.
                up.removeHandler(try up.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)).whenComplete { _ in
                    downstream.flush()
                    upstream.read()
                }
                down.removeHandler(try down.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)).whenComplete { _ in
                    upstream.flush()
                    downstream.read()
                }
            } catch {
                downstream.close(promise: nil)
                upstream.close(promise: nil)
            }
        }
    }
}
