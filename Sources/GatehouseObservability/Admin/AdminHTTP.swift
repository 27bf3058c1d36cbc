import NIOCore
import NIOHTTP1
import NIOPosix

/// An answer of an admin listener.
public struct AdminResponse: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: String

    public init(_ status: HTTPResponseStatus, json: String) {
        self.status = status
        self.contentType = "application/json"
        self.body = json
    }

    public init(_ status: HTTPResponseStatus, contentType: String, body: String) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// A Prometheus scrape answer.
    public static func metrics(_ text: String) -> AdminResponse {
        AdminResponse(.ok, contentType: PrometheusText.contentType, body: text)
    }
}

/// The admin listener both servers run (plain NIO HTTP/1.1, loopback by default): `GET` or `HEAD` a path, get
/// what `respond` answers for it (404 when nil). Never on the traffic listeners.
public enum AdminHTTP {
    /// Answers a path (the query removed) on the connection's event loop.
    public typealias Responder = @Sendable (_ path: String, _ eventLoop: any EventLoop) -> EventLoopFuture<AdminResponse>?

    /// Binds the listener; close the returned channel to stop it.
    public static func bind(host: String, port: Int, group: any EventLoopGroup, respond: @escaping Responder) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(respond: respond))
                }
            }
            .bind(host: host, port: port).get()
    }
}

/// One admin connection: answers each request once its end arrives.
final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let respond: AdminHTTP.Responder
    private var head: HTTPRequestHead?

    init(respond: @escaping AdminHTTP.Responder) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let value):
            head = value
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let answer: EventLoopFuture<AdminResponse>
            if head.method != .GET && head.method != .HEAD {
                answer = context.eventLoop.makeSucceededFuture(AdminResponse(.methodNotAllowed, json: "{\"error\":\"method_not_allowed\"}"))
            } else {
                answer = respond(path, context.eventLoop) ?? context.eventLoop.makeSucceededFuture(AdminResponse(.notFound, json: "{\"error\":\"not_found\"}"))
            }
            let keepAlive = head.isKeepAlive
            let isHEAD = head.method == .HEAD
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            answer.whenSuccess { response in
                let (handler, context) = bound.value
                handler.write(response, keepAlive: keepAlive, isHEAD: isHEAD, context: context)
            }
        }
    }

    private func write(_ response: AdminResponse, keepAlive: Bool, isHEAD: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        if !isHEAD { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil) }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }
}

@available(*, unavailable)
extension AdminHTTPHandler: Sendable {}
