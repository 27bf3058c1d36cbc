import NIOCore
import NIOHTTP2

extension GatewayServer {
    /// The connection-level HTTP/2 pipeline of a downstream TLS connection that negotiated `h2`: NIO's HTTP/2 handler
    /// and stream multiplexer (each stream set up by `streamInitializer`), then graceful shutdown on the drain's
    /// `ChannelShouldQuiesceEvent` (RFC 9113 §6.8): GOAWAY with 2^31-1, a PING, a second GOAWAY with the last stream
    /// once the client acknowledged the PING, and the close when the open streams are done (forced after
    /// `drainTimeout`). Shared by the server and the tests so that both run the same pipeline.
    static func configureHTTP2Connection(
        _ channel: any Channel,
        drainTimeout: TimeAmount,
        streamInitializer: @escaping NIOChannelInitializer
    ) -> EventLoopFuture<Void> {
        channel.configureHTTP2Pipeline(mode: .server, inboundStreamInitializer: streamInitializer).flatMapThrowing { _ in
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(HTTP2FlushBeforeClose())
            try sync.addHandler(HTTP2QuiesceAfterSettingsAck())
            try sync.addHandler(HTTP2StreamEventFilter())
            try sync.addHandler(
                NIOHTTP2ServerConnectionManagementHandler(
                    eventLoop: channel.eventLoop,
                    configuration: .init(maxIdleTime: nil, maxAge: nil, maxGraceTime: drainTimeout, keepalive: nil)
                )
            )
        }
    }
}

/// Holds the drain's `ChannelShouldQuiesceEvent` until the client has acknowledged our SETTINGS, so that a client whose
/// SETTINGS ACK is in flight when the gateway starts draining is not told PROTOCOL_ERROR.
///
/// Why (swift-nio-http2 1.46.0): a server's GOAWAY sent while no stream is open moves NIO's connection state machine
/// straight to `fullyQuiesced` (`HTTP2ConnectionStateMachine.sendGoaway` → `closeIfNeeded`: quiesced by the server
/// and `openStreams == 0`), even for the first GOAWAY of a graceful shutdown (last stream 2^31-1). In that state
/// `receiveSettingsAck` answers every SETTINGS ACK with a connection error (`ioOnClosedConnection`,
/// PROTOCOL_ERROR), so a client that received our SETTINGS just before the drain and acknowledges it — as RFC 9113
/// §6.5.3 requires it to — gets GOAWAY(PROTOCOL_ERROR) instead of the graceful GOAWAY, PING, GOAWAY(NO_ERROR) of
/// §6.8. Seen in 3 of ~12 interop runs with SIGTERM sent right after the server acknowledged the client's SETTINGS.
///
/// NIO sends exactly one SETTINGS of ours (the connection preface; we never send another), so one ACK ends the
/// window: from then on the handler takes itself out of the pipeline and costs nothing per frame. Before it, each
/// connection-level frame costs one enum check. A client that never acknowledges is not waited for past the
/// drain timeout: the server closes every connection still open then.
final class HTTP2QuiesceAfterSettingsAck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame

    private var heldQuiesce = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        context.fireChannelRead(data)
        guard case .settings(.ack) = frame.payload else { return }
        // Our SETTINGS is acknowledged: a GOAWAY can no longer make the client's ACK a protocol error.
        if heldQuiesce {
            heldQuiesce = false
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            heldQuiesce = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension HTTP2QuiesceAfterSettingsAck: Sendable {}

/// Flushes before a close that comes from the connection management handler, so that the final GOAWAY of a graceful
/// shutdown reaches the client.
///
/// Why (swift-nio-http2 1.46.0): `NIOHTTP2ServerConnectionManagementHandler.handlePingAck` writes the final
/// GOAWAY(last stream, NO_ERROR) and, with no stream open, calls `context.close` at once; inside a read (the PING ACK
/// is one) its flush is only marked pending for `channelReadComplete`, which comes after the close, so the GOAWAY is
/// dropped with the unflushed writes: over TLS the client saw GOAWAY(2^31-1) and PING, then the close, never the
/// final GOAWAY of RFC 9113 §6.8. One flush per connection close.
final class HTTP2FlushBeforeClose: ChannelOutboundHandler {
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        context.flush()
        // The TLS handler below may itself be inside its read: close after it, with what was flushed written.
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.execute { bound.value.close(mode: mode, promise: promise) }
    }
}

@available(*, unavailable)
extension HTTP2FlushBeforeClose: Sendable {}
