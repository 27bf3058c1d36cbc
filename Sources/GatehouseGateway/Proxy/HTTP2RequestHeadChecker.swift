import NIOCore
import NIOHPACK
import NIOHTTP2

/// Sits in front of NIO's HTTP/2-to-HTTP/1 codec on every HTTP/2 stream and checks what that conversion would
/// otherwise lose or pass on ambiguously (RFC 9113 §8.2-8.3):
///
/// - `:authority` and `Host` naming different hosts: the codec silently keeps `Host`, so the gateway would route on
///   one name while an HTTP/2-aware backend or log sees the other. Refused. When they agree, `Host` is dropped and
///   the codec rebuilds it from `:authority`.
/// - Leading or trailing whitespace in a field value (§8.2.1: malformed; HTTP/1 parsers trim it, so a value would
///   differ between hops). Refused.
/// - `content-length` that is not one decimal number, or several that differ (`5, 5` would be read as 5 by some
///   HTTP/1 parsers and refused by others). Refused.
/// - Several `cookie` fields (§8.2.3 lets a client split them for compression): joined with `"; "` into one, since an
///   HTTP/1 backend may read only the first.
///
/// A refusal is reported to the stream's `DownstreamHandler`, which answers 400 with its usual JSON body and
/// request id (the HEADERS frame itself passes on so that there is a request to answer).
final class HTTP2RequestHeadChecker: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload

    unowned(unsafe) let downstream: DownstreamHandler
    private var sawHeaders = false

    init(downstream: DownstreamHandler) {
        self.downstream = downstream
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        guard case .headers(var headers) = payload, !sawHeaders else {
            context.fireChannelRead(data)  // DATA, and trailers (a second HEADERS)
            return
        }
        sawHeaders = true
        switch Self.check(headers.headers) {
        case .pass:
            context.fireChannelRead(data)
        case .rewrite(let rewritten):
            headers.headers = rewritten
            context.fireChannelRead(wrapInboundOut(.headers(headers)))
        case .refuse(let reason):
            downstream.refuseHTTP2Head(reason)
            context.fireChannelRead(data)
        }
    }

    enum Verdict: Equatable {
        case pass
        case rewrite(HPACKHeaders)
        case refuse(String)
    }

    /// The decision for one request header block, separate from the handler so that it is tested directly.
    static func check(_ headers: HPACKHeaders) -> Verdict {
        var authority: String?
        var host: String?
        var cookies = 0
        var contentLength: Substring?
        for (name, value, _) in headers {
            if let first = value.utf8.first, first == 0x20 || first == 0x09 {
                return .refuse("the value of '\(name)' starts with whitespace")
            }
            if let last = value.utf8.last, last == 0x20 || last == 0x09 {
                return .refuse("the value of '\(name)' ends with whitespace")
            }
            switch name {
            case ":authority": authority = value
            case "host":
                if host != nil { return .refuse("more than one host field") }
                host = value
            case "cookie": cookies += 1
            case "content-length":
                guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                    return .refuse("content-length must be one decimal number")
                }
                if let earlier = contentLength, earlier != value[...] { return .refuse("content-length fields differ") }
                contentLength = value[...]
            default: break
            }
        }
        if let authority, let host, !HeaderHygiene.equalsIgnoringCase(authority, lowercased: host.lowercased()) {
            return .refuse("the host field differs from :authority")
        }
        guard host != nil && authority != nil || cookies > 1 else { return .pass }
        var rewritten = HPACKHeaders()
        var joinedCookie: String?
        for (name, value, indexing) in headers {
            if name == "host" && authority != nil { continue }  // the codec makes Host from :authority
            if name == "cookie" && cookies > 1 {
                joinedCookie = joinedCookie.map { $0 + "; " + value } ?? value
                continue
            }
            rewritten.add(name: name, value: value, indexing: indexing)
        }
        if let joinedCookie { rewritten.add(name: "cookie", value: joinedCookie) }
        return .rewrite(rewritten)
    }
}

@available(*, unavailable)
extension HTTP2RequestHeadChecker: Sendable {}

/// Passes NIO's stream lifecycle events to `NIOHTTP2ServerConnectionManagementHandler` only for streams that were
/// created: a HEADERS frame that NIO's own validation rejects (two different `content-length` fields, say) yields a
/// `StreamClosedEvent` for a stream that never opened, and the management handler's state machine asserts on it —
/// a crash of debug builds that any client could trigger (swift-nio-http2 1.46.0). One set insert and remove per
/// stream.
final class HTTP2StreamEventFilter: ChannelInboundHandler {
    typealias InboundIn = Any

    private var open = Set<HTTP2StreamID>()

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let created = event as? NIOHTTP2StreamCreatedEvent {
            open.insert(created.streamID)
        } else if let closed = event as? StreamClosedEvent, open.remove(closed.streamID) == nil {
            return  // never opened: nothing for the management handler to close
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension HTTP2StreamEventFilter: Sendable {}
