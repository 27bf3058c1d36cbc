import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A raw HTTP/1.1 server on 127.0.0.1 port 0 for client tests: for each request head it writes the pieces `answer`
/// returns for the request target (and its own port, for bodies that name the server), flushing after each piece (so that a test can split a response where it
/// wants), then closes the connection. Records the targets it was asked for.
final class ScriptedHTTPServer: Sendable {
    typealias Answer = @Sendable (_ target: String, _ port: Int) -> [[UInt8]]

    private let channel: any Channel
    private let requested: NIOLockedValueBox<[String]>
    var port: Int { channel.localAddress!.port! }
    /// The request targets received so far, in order.
    var targets: [String] { requested.withLockedValue { $0 } }

    init(answer: @escaping Answer) async throws {
        let requested = NIOLockedValueBox<[String]>([])
        self.requested = requested
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(answer: answer, requested: requested))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func close() async throws { try await channel.close() }

    /// `200 OK` with `body` and a Content-Length, in one piece.
    static func ok(_ body: String, contentType: String = "application/json") -> [[UInt8]] {
        [Array("HTTP/1.1 200 OK\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)]
    }

    static let notFound: [[UInt8]] = [Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)]

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let answer: Answer
        let requested: NIOLockedValueBox<[String]>
        var received: [UInt8] = []
        var answered = false

        init(answer: @escaping Answer, requested: NIOLockedValueBox<[String]>) {
            self.answer = answer
            self.requested = requested
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += unwrapInboundIn(data).readableBytesView
            guard !answered, let end = received.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            answered = true
            let requestLine = String(decoding: received[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
            let parts = requestLine.split(separator: " ")
            let target = parts.count > 1 ? String(parts[1]) : ""
            requested.withLockedValue { $0.append(target) }
            for piece in answer(target, context.channel.localAddress?.port ?? 0) {
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: piece)), promise: nil)
            }
            context.close(promise: nil)
        }

        typealias OutboundOut = ByteBuffer
    }
}
