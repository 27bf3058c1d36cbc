import NIOHTTP1

/// How the body of an upstream request is delimited: decided by the gateway from what it will actually forward,
/// never taken from the client's headers (a client's `Connection: content-length` once dropped the length while
/// the body still went out, and the upstream read the body as a second request).
///
/// The upstream encoder adds no framing of its own and chunk-frames exactly when the head says
/// `Transfer-Encoding: chunked`, so the head written here and the bytes that follow always agree.
enum UpstreamFraming: Equatable {
    /// No body. POST, PUT and PATCH say `Content-Length: 0` (servers may answer 411 without a length).
    case none
    /// A body of exactly this many bytes (the client's validated `Content-Length`).
    case contentLength(Int)
    /// A body of unknown length: chunked.
    case chunked
    /// HTTP/2 without `content-length`: whether a body follows is known at the first DATA frame (→ `chunked`) or
    /// the end of the stream (→ `none`). The upstream head is held until then; the end usually arrives with the
    /// HEADERS frame, so nothing waits in practice.
    case undecided

    /// The framing for a request head, from the client's validated framing information.
    static func decide(version: HTTPVersion, contentLength: Int?, chunked: Bool) -> UpstreamFraming {
        if chunked { return .chunked }
        if let contentLength { return contentLength > 0 ? .contentLength(contentLength) : .none }
        return version.major >= 2 ? .undecided : .none
    }

    /// Adds the framing header (the builder copied none of the client's).
    func apply(to headers: inout HTTPHeaders, method: HTTPMethod) {
        switch self {
        case .none:
            switch method {
            case .POST, .PUT, .PATCH: headers.add(name: "Content-Length", value: "0")
            default: break
            }
        case .contentLength(let length):
            headers.add(name: "Content-Length", value: String(length))
        case .chunked:
            headers.add(name: "Transfer-Encoding", value: "chunked")
        case .undecided:
            break
        }
    }
}
