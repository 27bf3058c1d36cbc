import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A loopback HTTP/1.1 server whose answer to each request is decided by a closure, counting the connections it
/// accepts.
final class TestServer: Sendable {
    enum Answer: Sendable {
        /// 200 with this body (keep-alive).
        case respond(String)
        /// Close the connection without answering.
        case close
        /// Never answer.
        case hang
    }

    /// `index`: the request's position on its connection (0 for the first).
    typealias Behaviour = @Sendable (_ index: Int, _ head: HTTPRequestHead) -> Answer

    let channel: any Channel
    private let accepted: NIOLockedValueBox<Int>
    private let heads: NIOLockedValueBox<[HTTPRequestHead]>

    var port: Int { channel.localAddress!.port! }
    var acceptedConnections: Int { accepted.withLockedValue { $0 } }
    var requests: [HTTPRequestHead] { heads.withLockedValue { $0 } }

    init(_ behaviour: @escaping Behaviour) async throws {
        let accepted = NIOLockedValueBox(0)
        let heads = NIOLockedValueBox<[HTTPRequestHead]>([])
        self.accepted = accepted
        self.heads = heads
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(behaviour: behaviour, heads: heads))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async {
        try? await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let behaviour: Behaviour
        let heads: NIOLockedValueBox<[HTTPRequestHead]>
        var index = 0
        var head: HTTPRequestHead?

        init(behaviour: @escaping Behaviour, heads: NIOLockedValueBox<[HTTPRequestHead]>) {
            self.behaviour = behaviour
            self.heads = heads
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                heads.withLockedValue { $0.append(head) }
            case .body:
                break
            case .end:
                guard let head else { return }
                defer { index += 1 }
                switch behaviour(index, head) {
                case .respond(let text):
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: String(text.utf8.count))
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                case .close:
                    context.close(promise: nil)
                case .hang:
                    break
                }
            }
        }
    }
}

@available(*, unavailable)
extension TestServer.Handler: Sendable {}
