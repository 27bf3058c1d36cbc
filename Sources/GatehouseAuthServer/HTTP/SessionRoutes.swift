import GatehouseConfiguration
import GatehouseTokens
import HTTPTypes
import Hummingbird

/// The session cookie, the pages' `form-action`, and signing out.
extension AuthorizationServer {
    /// The session cookie's name: on an https issuer with the `__Host-` prefix, which a browser accepts only with
    /// `Secure`, `Path=/` and no `Domain` — so no sibling subdomain and no plain-http page can set or shadow it.
    /// On a loopback http issuer (development) `Secure` cannot be set, so neither can the prefix.
    var sessionCookieName: String {
        configuration.isLoopbackHTTPIssuer ? Self.sessionCookie : Self.hostSessionCookie
    }

    func cookie(_ value: String, maxAge: Int? = nil) -> String {
        let secure = configuration.isLoopbackHTTPIssuer ? "" : "; Secure"
        return "\(sessionCookieName)=\(value); Path=/; Max-Age=\(maxAge ?? configuration.login.sessionLifetime); HttpOnly; SameSite=Lax" + secure
    }

    func sessionID(_ request: Request) -> String? {
        request.cookies[sessionCookieName]?.value
    }

    /// Where a page's form may submit to (CSP `form-action`): this server, and the origin of the request's redirect
    /// URI — browsers apply `form-action` to the redirect that answers the form too, and the sign-in and consent
    /// forms end in a 303 to the client.
    func formAction(_ request: PendingAuthorization) -> [String] {
        guard let url = ParsedURL(request.redirectURI), Self.isCSPHost(url.host) else { return [] }
        return [url.scheme + "://" + url.host + (url.port.map { ":\($0)" } ?? "")]
    }

    /// Whether a host can be written in a CSP source expression as it is: a DNS name or an IPv4 address. (An IPv6
    /// literal has no CSP syntax; its origin is then not allowed, and such a client's forms end in a blocked
    /// redirect in browsers that enforce `form-action` on redirects.)
    static func isCSPHost(_ host: String) -> Bool {
        !host.isEmpty && host.utf8.allSatisfy { byte in
            (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
    }

    // MARK: Signing out

    /// `GET /logout`: a page with a sign-out button (a form with the session's CSRF token), or "signed out".
    func logoutPage(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        guard let id = sessionID(request), let session = try await sessions.session(id: id, now: clock.now()) else {
            return Responses.html(pages.signedOut(), cookies: [clearedCookie])
        }
        return Responses.html(pages.logout(username: session.username, csrfToken: session.csrfToken))
    }

    /// `POST /logout` with the session's `csrf_token`: ends the session (signed in or not) and clears the cookie.
    /// Without a session there is nothing to end: the same "signed out" page. A wrong token changes nothing (400).
    func logoutSubmit(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let form: FormParameters
        switch await readPageForm(request, context) {
        case .form(let parsed): form = parsed
        case .tooLarge: return tooLargePage(context)
        case .invalid: return render(.errorPage(heading: "Invalid request", message: "The sign-out form was not sent correctly."))
        }
        guard let id = sessionID(request), let session = try await sessions.session(id: id, now: clock.now()) else {
            return Responses.html(pages.signedOut(), cookies: [clearedCookie])
        }
        guard let csrf = form["csrf_token"], SecureToken.constantTimeEquals(csrf, session.csrfToken) else {
            return render(.errorPage(heading: "Invalid request", message: "The sign-out form has expired. Open the sign-out page again."))
        }
        try await sessions.signOut(id: id)
        return Responses.html(pages.signedOut(), cookies: [clearedCookie])
    }

    /// Tells the browser to drop the session cookie.
    private var clearedCookie: String {
        cookie("", maxAge: 0)
    }
}
