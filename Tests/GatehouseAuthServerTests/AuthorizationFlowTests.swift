import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// The authorization endpoint, sign-in and consent pages, and code redemption over real HTTP.
@Suite struct AuthorizationFlowTests {
    static let spaRedirect = "http://127.0.0.1:8081/spa/callback"
    static let webRedirect = "http://127.0.0.1:8081/callback"

    func authorizeURL(client: String = "demo-spa", redirect: String? = spaRedirect, responseType: String? = "code", scope: String? = "orders:read", state: String? = "st-1", challenge: String? = challenge, method: String? = "S256") -> String {
        "/authorize?" + FormParameters.encode([
            ("response_type", responseType), ("client_id", client), ("redirect_uri", redirect), ("scope", scope), ("state", state),
            ("code_challenge", challenge), ("code_challenge_method", challenge == nil ? nil : method),
        ])
    }

    /// Drives authorize → login → consent; returns the final redirect and the session cookie.
    func signIn(_ client: any TestClientProtocol, url: String, username: String = "alice", password: String = "alice-password", approve: Bool = true) async throws -> (location: String, session: String) {
        let start = try await client.send(.get, url)
        #expect(start.status == .seeOther, "\(start.text)")
        let anonymous = try #require(start.cookie(AuthorizationServer.sessionCookie))
        let loginPath = try #require(start.location)
        #expect(loginPath.hasPrefix("/login?request="))
        let page = try await client.send(.get, loginPath, cookie: anonymous)
        #expect(page.status == .ok)
        let csrf = try #require(page.hidden("csrf_token"))
        let request = try #require(page.hidden("request"))
        let login = try await client.send(.post, "/login", form: [("csrf_token", csrf), ("request", request), ("username", username), ("password", password)], cookie: anonymous)
        #expect(login.status == .seeOther, "\(login.text)")
        let session = try #require(login.cookie(AuthorizationServer.sessionCookie))
        #expect(session != anonymous)  // a new session id after sign-in
        var location = try #require(login.location)
        if location.hasPrefix("/consent") {
            let consent = try await client.send(.get, location, cookie: session)
            #expect(consent.status == .ok)
            #expect(consent.text.contains("orders:read"))
            let decided = try await client.send(.post, "/consent", form: [("csrf_token", try #require(consent.hidden("csrf_token"))), ("request", request), ("decision", approve ? "approve" : "deny")], cookie: session)
            #expect(decided.status == .seeOther)
            location = try #require(decided.location)
        }
        return (location, session)
    }

    @Test func codeFlowWithPKCEForAPublicClient() async throws {
        try await withAuthServer { client, _, store in
            let (location, _) = try await signIn(client, url: authorizeURL())
            #expect(location.hasPrefix(Self.spaRedirect + "?"))
            let query = parameters(of: location)
            #expect(query["state"] == "st-1")
            #expect(query["iss"] == "http://127.0.0.1:9000")
            let code = try #require(query["code"])

            let tokens = try await client.token([("grant_type", "authorization_code"), ("code", code), ("redirect_uri", Self.spaRedirect), ("client_id", "demo-spa"), ("code_verifier", verifier)])
            #expect(tokens.status == .ok, "\(tokens.text)")
            #expect(tokens.string("scope") == "orders:read")
            let refresh = try #require(tokens.string("refresh_token"))

            // Replay: refused, and everything issued from the code is revoked.
            let replay = try await client.token([("grant_type", "authorization_code"), ("code", code), ("redirect_uri", Self.spaRedirect), ("client_id", "demo-spa"), ("code_verifier", verifier)])
            #expect(replay.status == .badRequest)
            #expect(replay.string("error") == "invalid_grant")
            #expect(try await store.token(TokenLocator(token: tokens.string("access_token") ?? "")!)?.revoked == true)
            let refreshed = try await client.token([("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", "demo-spa")])
            #expect(refreshed.string("error") == "invalid_grant")
        }
    }

    @Test func codeFlowForAConfidentialClientAndRememberedConsent() async throws {
        try await withAuthServer { client, _, _ in
            let url = authorizeURL(client: "demo-web", redirect: Self.webRedirect, scope: "orders:read orders:write")
            let (location, session) = try await signIn(client, url: url)
            let code = try #require(parameters(of: location)["code"])
            let tokens = try await client.token([("grant_type", "authorization_code"), ("code", code), ("redirect_uri", Self.webRedirect), ("code_verifier", verifier)], basic: ("demo-web", "demo-web-secret"))
            #expect(tokens.status == .ok, "\(tokens.text)")

            // Signed in and consented: the next authorization goes straight back to the client.
            let again = try await client.send(.get, authorizeURL(client: "demo-web", redirect: Self.webRedirect, scope: "orders:read", state: "st-2"), cookie: session)
            #expect(again.status == .seeOther)
            let direct = try #require(again.location)
            #expect(direct.hasPrefix(Self.webRedirect + "?code="))
            #expect(parameters(of: direct)["state"] == "st-2")
        }
    }

    @Test func codeRedemptionErrors() async throws {
        try await withAuthServer { client, clock, _ in
            func freshCode() async throws -> String {
                let (location, _) = try await signIn(client, url: authorizeURL())
                return try #require(parameters(of: location)["code"])
            }
            func redeem(_ code: String, verifier: String? = verifier, redirect: String = Self.spaRedirect) async throws -> Reply {
                var form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect), ("client_id", "demo-spa")]
                if let verifier { form.append(("code_verifier", verifier)) }
                return try await client.token(form)
            }
            #expect(try await redeem(try await freshCode(), verifier: nil).string("error") == "invalid_grant")
            #expect(try await redeem(try await freshCode(), verifier: String(repeating: "a", count: 43)).string("error") == "invalid_grant")
            #expect(try await redeem(try await freshCode(), redirect: "http://127.0.0.1:8081/other").string("error") == "invalid_grant")
            #expect(try await redeem("made-up-code").string("error") == "invalid_grant")
            let expiring = try await freshCode()
            clock.advance(61)
            let expired = try await redeem(expiring)
            #expect(expired.string("error") == "invalid_grant")
            #expect(expired.string("error_description") == "the authorization code has expired")
        }
    }

    @Test func implicitGrantReturnsAShortLivedTokenInTheFragment() async throws {
        try await withAuthServer { client, _, store in
            let (location, _) = try await signIn(client, url: authorizeURL(responseType: "token", challenge: nil))
            #expect(location.hasPrefix(Self.spaRedirect + "#"))
            let fragment = parameters(of: location, fragment: true)
            #expect(fragment["token_type"] == "Bearer")
            #expect(fragment["expires_in"] == "900")
            #expect(fragment["state"] == "st-1")
            #expect(fragment["iss"] == "http://127.0.0.1:9000")
            #expect(fragment["refresh_token"] == nil)
            let implicitToken = try #require(fragment["access_token"])
            let stored = try await store.token(try #require(TokenLocator(token: implicitToken)))
            #expect(stored?.grantType == "implicit")

            // A client not registered for implicit gets the error in the fragment.
            let refused = try await client.send(.get, authorizeURL(client: "demo-web", redirect: Self.webRedirect, responseType: "token", challenge: nil))
            #expect(refused.status == .seeOther)
            let error = parameters(of: refused.location ?? "", fragment: true)
            #expect(error["error"] == "unauthorized_client")
            #expect(error["state"] == "st-1")
            #expect(error["iss"] == "http://127.0.0.1:9000")
        }
    }

    @Test func unknownClientOrRedirectShowsAPageAndNeverRedirects() async throws {
        try await withAuthServer { client, _, _ in
            for url in [
                authorizeURL(client: "ghost"),
                authorizeURL(redirect: "https://evil.example/cb"),
                authorizeURL(redirect: "http://127.0.0.1:8081/spa/callback/../evil"),
                "/authorize?response_type=code",
                authorizeURL() + "&client_id=demo-web",
            ] {
                let reply = try await client.send(.get, url)
                #expect(reply.status == .badRequest, "\(url)")
                #expect(reply.location == nil, "\(url)")
                #expect(reply.headers[.contentType]?.hasPrefix("text/html") == true)
            }
            // A native app's loopback redirect may use another port (RFC 8252 §7.3).
            let loopback = try await client.send(.get, authorizeURL(client: "demo-cli", redirect: "http://127.0.0.1:53682/cli/callback"))
            #expect(loopback.location?.hasPrefix("/login?request=") == true)
        }
    }

    /// A browser client's loopback redirect URI matches only at its registered port: an error page, no redirect
    /// (before, any port was accepted for every client).
    @Test func aWebClientsLoopbackRedirectAtAnotherPortIsRefused() async throws {
        try await withAuthServer { client, _, _ in
            for url in [
                authorizeURL(redirect: "http://127.0.0.1:53682/spa/callback"),
                authorizeURL(client: "demo-web", redirect: "http://127.0.0.1:53682/callback"),
            ] {
                let reply = try await client.send(.get, url)
                #expect(reply.status == .badRequest, "\(url)")
                #expect(reply.location == nil, "\(url)")
                #expect(reply.headers[.contentType]?.hasPrefix("text/html") == true)
                #expect(reply.text.contains("Invalid redirect URI"))
            }
            let registered = try await client.send(.get, authorizeURL(redirect: Self.spaRedirect))
            #expect(registered.location?.hasPrefix("/login?request=") == true)
        }
    }

    /// A native client's code comes back at the port it asked for, and redeems with that redirect URI.
    @Test func aNativeClientsLoopbackRedirectAtAnotherPortIsAccepted() async throws {
        try await withAuthServer { client, _, _ in
            let redirect = "http://127.0.0.1:53682/cli/callback"
            let (location, _) = try await signIn(client, url: authorizeURL(client: "demo-cli", redirect: redirect))
            #expect(location.hasPrefix(redirect + "?"), "\(location)")
            let code = try #require(parameters(of: location)["code"])
            let tokens = try await client.token([("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect), ("client_id", "demo-cli"), ("code_verifier", verifier)])
            #expect(tokens.status == .ok, "\(tokens.text)")
        }
    }

    /// Anyone can present a public client's id, so a remembered consent does not let a public client's request
    /// through silently: the consent page again (before: straight to the client with a code).
    @Test func aPublicClientWithRememberedConsentIsAskedAgain() async throws {
        try await withAuthServer { client, _, _ in
            let (first, session) = try await signIn(client, url: authorizeURL())
            #expect(parameters(of: first)["code"] != nil)
            let again = try await client.send(.get, authorizeURL(state: "st-2"), cookie: session)
            #expect(again.location?.hasPrefix("/consent?request=") == true, "\(again.location ?? again.text)")
            // Implicit as well: no token in a fragment without asking.
            let implicit = try await client.send(.get, authorizeURL(responseType: "token", challenge: nil), cookie: session)
            #expect(implicit.location?.hasPrefix("/consent?request=") == true, "\(implicit.location ?? implicit.text)")
        }
    }

    @Test func aFirstPartyPublicClientUsesRememberedConsent() async throws {
        try await withAuthServer(configure: { configuration in
            for index in configuration.clients.indices where configuration.clients[index].id == "demo-spa" { configuration.clients[index].firstParty = true }
        }) { client, _, _ in
            let (_, session) = try await signIn(client, url: authorizeURL())
            let again = try await client.send(.get, authorizeURL(state: "st-2"), cookie: session)
            #expect(again.location?.hasPrefix(Self.spaRedirect + "?code=") == true, "\(again.location ?? again.text)")
        }
    }

    @Test func otherAuthorizationErrorsRedirectWithStateAndIssuer() async throws {
        try await withAuthServer { client, _, _ in
            let cases: [(String, String)] = [
                (authorizeURL(responseType: nil), "invalid_request"),
                (authorizeURL(responseType: "id_token"), "unsupported_response_type"),
                (authorizeURL(scope: "admin"), "invalid_scope"),
                (authorizeURL(challenge: nil), "invalid_request"),  // public client without PKCE
                (authorizeURL(method: "plain"), "invalid_request"),
                (authorizeURL(challenge: "short"), "invalid_request"),
                (authorizeURL(client: "demo-web", redirect: Self.webRedirect, challenge: nil), "invalid_request"),  // PKCE enforced for confidential
            ]
            for (url, expected) in cases {
                let reply = try await client.send(.get, url)
                #expect(reply.status == .seeOther, "\(url)")
                let query = parameters(of: reply.location ?? "")
                #expect(query["error"] == expected, "\(url) → \(reply.location ?? "nil")")
                #expect(query["iss"] == "http://127.0.0.1:9000")
                #expect(query["state"] == "st-1")
            }
        }
    }

    @Test func confidentialClientMayOptOutOfPKCEWhenConfigured() async throws {
        try await withAuthServer(configure: { $0.pkce.requireForConfidentialClients = false }) { client, _, _ in
            let (location, _) = try await signIn(client, url: authorizeURL(client: "no-pkce", redirect: "https://app.example/cb", challenge: nil))
            let code = try #require(parameters(of: location)["code"])
            let tokens = try await client.token([("grant_type", "authorization_code"), ("code", code), ("redirect_uri", "https://app.example/cb")], basic: ("no-pkce", "no-pkce-secret"))
            #expect(tokens.status == .ok, "\(tokens.text)")
        }
    }

    @Test func denyingConsentRedirectsWithAccessDenied() async throws {
        try await withAuthServer { client, _, _ in
            let (location, _) = try await signIn(client, url: authorizeURL(), username: "bob", password: "bob-password", approve: false)
            let query = parameters(of: location)
            #expect(query["error"] == "access_denied")
            #expect(query["state"] == "st-1")
            #expect(query["code"] == nil)
        }
    }

    @Test func pagesCarrySecurityHeadersAndRefuseBadCSRF() async throws {
        try await withAuthServer { client, _, _ in
            let start = try await client.send(.get, authorizeURL())
            let setCookie = start.headers[values: .setCookie].first ?? ""
            #expect(setCookie.contains("HttpOnly"))
            #expect(setCookie.contains("SameSite=Lax"))
            #expect(!setCookie.contains("Secure"))  // loopback http issuer only
            let session = try #require(start.cookie(AuthorizationServer.sessionCookie))
            let page = try await client.send(.get, start.location ?? "", cookie: session)
            #expect(page.headers[HTTPField.Name("Content-Security-Policy")!]?.contains("frame-ancestors 'none'") == true)
            #expect(page.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            #expect(page.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
            #expect(page.headers[.cacheControl] == "no-store")
            let request = try #require(page.hidden("request"))

            let forged = try await client.send(.post, "/login", form: [("csrf_token", "forged"), ("request", request), ("username", "alice"), ("password", "alice-password")], cookie: session)
            #expect(forged.status == .badRequest)
            #expect(forged.cookie(AuthorizationServer.sessionCookie) == nil)
            // Without the session cookie the request id alone is worthless.
            let stolen = try await client.send(.get, start.location ?? "")
            #expect(stolen.status == .badRequest)
            // A wrong password shows the form again with an error, not a redirect.
            let wrong = try await client.send(.post, "/login", form: [("csrf_token", page.hidden("csrf_token") ?? ""), ("request", request), ("username", "alice"), ("password", "nope")], cookie: session)
            #expect(wrong.status == .ok)
            #expect(wrong.text.contains("id=\"login-error\""))
            #expect(wrong.location == nil)
        }
    }

    @Test func secureCookieOnAnHTTPSIssuer() async throws {
        try await withAuthServer(configure: { $0.issuer = "https://auth.example.com" }) { client, _, _ in
            let start = try await client.send(.get, authorizeURL())
            #expect(start.headers[values: .setCookie].first?.contains("; Secure") == true)
        }
    }
}
