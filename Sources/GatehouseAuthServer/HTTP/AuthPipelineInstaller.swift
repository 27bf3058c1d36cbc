import GatehouseObservability
import Logging
import NIOCore
import NIOHTTPTypesHTTP1

/// The handler Hummingbird's `additionalChannelHandlers` places after its codec. It completes the authorization
/// server's pipeline where Hummingbird offers no hook, then only passes everything on:
///
///     ConnectionBytesObserver → HTTP decoder/encoder → ConnectionTimeoutHandler → TokenFastPath → Hummingbird's codec → …
///
/// - `TokenFastPath` goes in front of the codec, where requests are still NIO's HTTP/1 parts.
/// - The timeouts go in front of the fast path, so that they see every request and response, including the ones
///   the fast path answers (Hummingbird's own idle timeout sits after the codec and would not see those, and so
///   would close a gateway's busy connection as idle). The byte observer goes first, because a partial head never
///   leaves the decoder.
final class AuthPipelineInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let tokens: TokenService
    private let headerReadTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let logger: Logger
    private let metrics: AuthMetrics
    private let accessLog: AccessLogWriter?

    private let tracer: GatehouseTracer?

    init(tokens: TokenService, headerReadTimeout: TimeAmount, idleTimeout: TimeAmount, logger: Logger, metrics: AuthMetrics, accessLog: AccessLogWriter?, tracer: GatehouseTracer? = nil) {
        self.metrics = metrics
        self.accessLog = accessLog
        self.tracer = tracer
        self.tokens = tokens
        self.headerReadTimeout = headerReadTimeout
        self.idleTimeout = idleTimeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        do {
            let codec = try pipeline.handler(type: HTTP1ToHTTPServerCodec.self)
            let fastPath = TokenFastPath(tokens: tokens, logger: logger, metrics: metrics, accessLog: accessLog, tracer: tracer)
            try pipeline.addHandler(fastPath, position: .before(codec))
            let timeouts = ConnectionTimeoutHandler(headerReadTimeout: headerReadTimeout, idleTimeout: idleTimeout)
            try pipeline.addHandler(timeouts, position: .before(fastPath))
            try pipeline.addHandler(ConnectionBytesObserver(timeouts: timeouts), position: .first)
        } catch {
            // Without the codec this is not Hummingbird's HTTP/1 pipeline: nothing to add to.
            logger.error("connection handlers not installed", metadata: ["reason": "\(error)"])
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension AuthPipelineInstaller: Sendable {}
