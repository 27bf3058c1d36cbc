import NIOHTTP1

/// What admission decided about a request that may be forwarded.
struct AdmittedRequest {
    let route: CompiledRoute
    /// The route's matched prefix (for strip/rewrite).
    let prefix: String?
    let target: NormalizedTarget
    /// The host the request was routed on: an absolute-form target's authority, else `Host`.
    let host: String?
    /// A protocol upgrade the route allows (forwarded with `Upgrade`).
    let isUpgrade: Bool
    /// The client asked for an upgrade (allowed or not: HTTP/1's parser stops after such a request).
    let requestsUpgrade: Bool
    let contentLength: Int?
    let hasBody: Bool
    let framing: UpstreamFraming
    let idempotent: Bool

    /// The path the upstream gets: the route's prefix rewrite applied.
    var upstreamTarget: String {
        var path = target.path
        if let prefix, let replacement = route.prefixReplacement {
            var rest = String(path.dropFirst(prefix.count))
            if !rest.isEmpty && !rest.hasPrefix("/") && !replacement.hasSuffix("/") { rest = "/" + rest }
            path = replacement + rest
            if path.isEmpty { path = "/" }
            if !path.hasPrefix("/") { path = "/" + path }
        }
        return target.query.map { path + "?" + $0 } ?? path
    }
}

/// Admission's answer. (Not a `Result`: a generic enum over these payloads had its metadata looked up per request.)
enum AdmissionDecision {
    case admit(AdmittedRequest)
    case refuse(GatewayReply)
}

/// The checks a request head passes before any policy runs, in order — limits, framing, `Connection`, method,
/// target, route, body size — as a pure function of the head, its scan and the configuration. The first failure
/// is the reply (the status and message the client gets); nothing here touches a channel.
enum RequestAdmission {
    static func admit(
        _ head: HTTPRequestHead, _ scan: RequestHeadScan, gateway: CompiledGateway, http2Refusal: String?
    ) -> AdmissionDecision {
        if let reason = http2Refusal { return .refuse(.refused(.badRequest, "malformed HTTP/2 request: \(reason)")) }
        // A target over the limit is 414 (RFC 9112 §3), before it counts against the header block's size.
        if head.uri.utf8.count > PathNormalizer.maximumLength {
            return .refuse(.targetTooLong)
        }
        // Limits on the head (the decoder already capped both at its hard limits).
        if head.headers.count > gateway.maxHeaderCount {
            return .refuse(gateway.tooManyHeaderFields)
        }
        if scan.headerBytes > gateway.maxHeaderBytes {
            return .refuse(gateway.headerBlockTooLarge)
        }
        if (head.version.minor >= 1 && scan.hostCount != 1) || scan.hostCount > 1 || scan.host?.utf8.contains(UInt8(ascii: ",")) == true {
            return .refuse(.hostRequired)
        }
        if let nominated = scan.connectionNominates {
            return .refuse(.refused(.badRequest, "Connection must not name \(nominated)"))
        }
        // One length, one decimal number (HTTP/1's parser already refused the rest; HTTP/2 fields are checked here).
        let contentLength = scan.contentLengthValue.flatMap { $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } ? Int($0) : nil }
        if scan.contentLengthConflict || (scan.contentLengthValue != nil && contentLength == nil) {
            return .refuse(.badContentLength)
        }
        if head.method == .CONNECT {
            return .refuse(.connectNotSupported)
        }
        let requestsUpgrade = scan.requestsUpgrade
        if requestsUpgrade && head.version.major >= 2 {
            return .refuse(.noUpgradeOverHTTP2)
        }
        let target: NormalizedTarget
        switch PathNormalizer.normalize(head.uri, parameters: gateway.pathParameters) {
        case .success(let value): target = value
        case .failure(let error):
            return .refuse(.refused(error.code == .tooLong ? .uriTooLong : .badRequest, "bad request target: \(error.message)"))
        }
        // An absolute-form target's authority is the request's host (RFC 9112 §3.2.2): routed on, and sent upstream.
        let host = target.authority ?? scan.host
        guard let (route, prefix) = gateway.routes.match(host: host, path: target.path, method: head.method.rawValue) else {
            return .refuse(GatewayReply.noRoute.closing(!head.isKeepAlive || requestsUpgrade))
        }
        // Only the protocols the route allows are switched to; any other `Upgrade` (h2c above all) is not forwarded.
        let isUpgrade = requestsUpgrade && route.allowsUpgrade(scan.upgradeValue!)
        if let length = contentLength, length > route.maxBodyBytes {
            return .refuse(route.bodyTooLarge)
        }
        let hasBody = scan.chunked || (contentLength ?? 0) > 0
        if hasBody && head.method == .TRACE {
            return .refuse(.traceWithBody)
        }
        let idempotent: Bool
        switch head.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: idempotent = true
        default: idempotent = false
        }
        return .admit(
            AdmittedRequest(
                route: route, prefix: prefix, target: target, host: host, isUpgrade: isUpgrade, requestsUpgrade: requestsUpgrade,
                contentLength: contentLength, hasBody: hasBody,
                framing: UpstreamFraming.decide(version: head.version, contentLength: contentLength, chunked: scan.chunked), idempotent: idempotent
            )
        )
    }
}
