import HTTPTypes
import Hummingbird

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-Id")!
    static let frameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let contentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
    static let csp = HTTPField.Name("Content-Security-Policy")!
}

/// Response builders shared by every endpoint.
enum Responses {
    static func json(_ body: String, status: HTTPResponse.Status = .ok, noStore: Bool = true, extra: HTTPFields = [:]) -> Response {
        json(bytes: Array(body.utf8), status: status, noStore: noStore, extra: extra)
    }

    static func json(bytes body: [UInt8], status: HTTPResponse.Status = .ok, noStore: Bool = true, extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if noStore {
            headers[.cacheControl] = "no-store"
            headers[HTTPField.Name("Pragma")!] = "no-cache"
        }
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// RFC 6749 §5.2 error JSON, with the request id as an extension member.
    static func oauthError(_ error: OAuthError, requestID: String) -> Response {
        var body = JSONWriter()
        body.add("error", error.code.rawValue)
        body.add("error_description", error.description)
        body.add("request_id", requestID)
        var extra: HTTPFields = [:]
        if error.code == .invalidClient { extra[.wwwAuthenticate] = "Basic realm=\"gatehouse\", charset=\"UTF-8\"" }
        if let retryAfter = error.retryAfter { extra[.retryAfter] = String(retryAfter) }
        return json(body.finish(), status: error.status, extra: extra)
    }

    /// A generic HTTP error body for non-OAuth endpoints (404, 405, 413 …).
    static func httpError(status: HTTPResponse.Status, message: String, requestID: String) -> Response {
        var body = JSONWriter()
        body.add("error", errorName(status))
        body.add("error_description", message)
        body.add("request_id", requestID)
        return json(body.finish(), status: status)
    }

    static func errorName(_ status: HTTPResponse.Status) -> String {
        switch status.code {
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 413: "request_too_large"
        case 400: "invalid_request"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 503: "temporarily_unavailable"
        case 500...599: "server_error"
        default: status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "_")
        }
    }

    /// An HTML page with the headers that keep it out of frames, caches and referrers. Its forms may submit only to
    /// this server and to `formAction` (origins), which CSP's `form-action` enforces (`default-src` does not cover it).
    static func html(_ body: String, status: HTTPResponse.Status = .ok, cookies: [String] = [], extra: HTTPFields = [:], formAction: [String] = []) -> Response {
        var headers: HTTPFields = [
            .contentType: "text/html; charset=utf-8",
            .cacheControl: "no-store",
            .csp: pageCSP + (formAction.isEmpty ? "" : " " + formAction.joined(separator: " ")),
            .frameOptions: "DENY",
            .referrerPolicy: "no-referrer",
            .contentTypeOptions: "nosniff",
        ]
        for cookie in cookies { headers.append(HTTPField(name: .setCookie, value: cookie)) }
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static let pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

    /// 303 See Other (after every POST, and for the authorization redirects).
    static func seeOther(_ location: String, cookies: [String] = []) -> Response {
        var headers: HTTPFields = [
            .location: location, .cacheControl: "no-store", .referrerPolicy: "no-referrer",
        ]
        for cookie in cookies { headers.append(HTTPField(name: .setCookie, value: cookie)) }
        return Response(status: .seeOther, headers: headers)
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: Character, with replacement: Character) -> String {
        String(map { $0 == target ? replacement : $0 })
    }

    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard let targetCharacter = target.first, let replacementCharacter = replacement.first else { return self }
        return replacingOccurrences(of: targetCharacter, with: replacementCharacter)
    }
}
