import NIOCore
import NIOHTTP1

/// The downstream side of a proxied exchange, as the upstream connection sees it. Always called on the shared
/// event loop.
protocol UpstreamDelegate: AnyObject {
    func upstream(received part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstream(failed error: any Error)
    /// Whether the downstream channel can take more bytes (the upstream reads only while it can).
    var downstreamIsWritable: Bool { get }
    func upstreamWritabilityChanged(isWritable: Bool)
}

/// Identifies an upstream target. Hashed on every request (pools, load counts, health), so the hash of its host is
/// computed once.
public struct TargetKey: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int
    private let precomputedHash: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
        var hasher = Hasher()
        hasher.combine(host)
        hasher.combine(port)
        precomputedHash = hasher.finalize()
    }

    public static func == (lhs: TargetKey, rhs: TargetKey) -> Bool {
        lhs.port == rhs.port && lhs.host == rhs.host
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(precomputedHash)
    }

    public var description: String { "\(host):\(port)" }

    /// No target chosen yet.
    static let unassigned = TargetKey(host: "", port: 0)
}

/// One keep-alive HTTP/1.1 connection to a target, leased to one exchange at a time.
final class UpstreamConnection {
    let channel: any Channel
    let target: TargetKey
    let handler: UpstreamHandler
    /// False once the upstream said `Connection: close`, broke the framing, or the exchange was abandoned.
    var isReusable = true
    /// When an idle connection is closed (set on release).
    var idleDeadline: NIODeadline = .distantFuture

    init(channel: any Channel, target: TargetKey, handler: UpstreamHandler) {
        self.channel = channel
        self.target = target
        self.handler = handler
    }
}

/// The client-side channel handler of an upstream connection: hands response parts to the current delegate and
/// reads from the upstream only while the downstream can take more (backpressure).
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// The exchange using the connection. Strong on purpose (a `weak` reference gives the handler a side table and
    /// makes every retain of it slow); every path that ends an exchange clears it.
    var delegate: (any UpstreamDelegate)?
    /// Told when the connection closes (the pool drops it).
    var onClose: (() -> Void)?
    private var pendingRead = false
    private(set) var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let delegate {
            delegate.upstream(received: part)
        }
        // A response without a delegate (an idle connection talking) means the connection is unusable.
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        delegate?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.downstreamIsWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// The downstream became writable again: issue the read that was held back.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        delegate?.upstream(failed: error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstream(failed: UpstreamError.connectionClosed)
        onClose?()
        onClose = nil
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension UpstreamHandler: Sendable {}

extension UpstreamHandler: RemovableChannelHandler {}

/// Why an upstream exchange failed.
enum UpstreamError: Error, Equatable {
    case connectionClosed
    case connectFailed(String)
    case poolExhausted
    case timeout
    /// Connects to the target failed just now: none is tried before its backoff passes (`ConnectBackoff`).
    case connectBackoff
    /// The request stopped waiting for a connection (`UpstreamPool.cancelWaiting`).
    case waiterCancelled
}
