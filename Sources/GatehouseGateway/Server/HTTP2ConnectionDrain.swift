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
