import GatehouseTokens
import HTTPTypes
import Hummingbird
import NIOCore

extension AuthorizationServer {
    func makeRouter() -> Router<AuthRequestContext> {
        let router = Router(context: AuthRequestContext.self)
        router.add(middleware: ClientAddressMiddleware(trustedProxies: configuration.trustedProxies))
        // Tracing outside the request id: the server span is still open when the access-log line is written (its
        // trace and span ids go in the line), and the span's status is that of the answer sent, errors included.
        if let tracer { router.add(middleware: AuthTracingMiddleware(tracer: tracer)) }
        router.add(middleware: RequestIDMiddleware(logger: logger, metrics: metrics, accessLog: accessLog))

        router.get("/.well-known/oauth-authorization-server") { _, _ in self.metadataResponse() }
        router.get("/.well-known/openid-configuration") { _, _ in self.metadataResponse() }
        router.get("/healthz") { _, _ in Responses.json("{\"status\":\"ok\"}") }
        router.post("/token") { request, context in try await self.tokenEndpoint(request, context) }
        router.post("/introspect") { request, context in try await self.introspectionEndpoint(request, context) }
        router.post("/revoke") { request, context in try await self.revocationEndpoint(request, context) }
        router.get("/.well-known/jwks.json") { _, _ in
            Responses.json(self.keys.jwks, noStore: false, extra: [.cacheControl: "public, max-age=\(self.configuration.signing.jwksMaxAge)"])
        }
        router.get("/authorize") { request, context in try await self.authorizeEndpoint(request, context) }
        router.get("/login") { request, context in try await self.loginPage(request, context) }
        router.post("/login") { request, context in try await self.loginSubmit(request, context) }
        router.get("/consent") { request, context in try await self.consentPage(request, context) }
        router.post("/consent") { request, context in try await self.consentSubmit(request, context) }
        router.get("/logout") { request, context in try await self.logoutPage(request, context) }
        router.post("/logout") { request, context in try await self.logoutSubmit(request, context) }
        return router
    }

    private func metadataResponse() -> Response {
        Responses.json(metadataJSON.withLockedValue { $0 }, noStore: false, extra: [.cacheControl: "public, max-age=300"])
    }

    // MARK: Token endpoint

    private func tokenEndpoint(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let form: FormParameters
        switch await readForm(request, context) {
        case .success(let parsed): form = parsed
        case .failure(let error):
            metrics.tokenError(error.code.rawValue)
            return Responses.oauthError(error, requestID: context.requestID)
        }
        TokenService.noteGrantType(form["grant_type"])
        do {
            let issued = try await tokens.token(form: form, authorization: request.headers[.authorization], remoteAddress: context.remoteAddress)
            metrics.tokenIssued(grantType: form["grant_type"])
            TokenService.noteOutcome(nil)
            return Responses.json(issued.json)
        } catch {
            metrics.tokenError(error.code.rawValue)
            TokenService.noteOutcome(error)
            return Responses.oauthError(error, requestID: context.requestID)
        }
    }

    /// RFC 7662; with `Accept: application/token-introspection+jwt`, an RFC 9701 signed response.
    private func introspectionEndpoint(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let form: FormParameters
        switch await readForm(request, context) {
        case .success(let parsed): form = parsed
        case .failure(let error): return Responses.oauthError(error, requestID: context.requestID)
        }
        do {
            let (caller, claims) = try await tokens.introspect(form: form, authorization: request.headers[.authorization], remoteAddress: context.remoteAddress)
            let accept = request.headers[.accept]?.lowercased() ?? ""
            if accept.contains("application/token-introspection+jwt") {
                let payload = IntrospectionResponseClaims(iss: configuration.issuer, aud: caller.id, iat: clock.now(), token_introspection: claims)
                let jwt = try keys.sign(payload, type: IntrospectionResponseClaims.type)
                return Response(
                    status: .ok,
                    headers: [.contentType: "application/token-introspection+jwt", .cacheControl: "no-store"],
                    body: .init(byteBuffer: ByteBuffer(string: jwt))
                )
            }
            return Responses.json(bytes: claims.jsonBytes)
        } catch let error as OAuthError {
            return Responses.oauthError(error, requestID: context.requestID)
        }
    }

    /// RFC 7009: 200 for every authenticated request with a token, whether or not it was known.
    private func revocationEndpoint(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let form: FormParameters
        switch await readForm(request, context) {
        case .success(let parsed): form = parsed
        case .failure(let error): return Responses.oauthError(error, requestID: context.requestID)
        }
        do {
            try await tokens.revoke(form: form, authorization: request.headers[.authorization], remoteAddress: context.remoteAddress)
            return Response(status: .ok, headers: [.cacheControl: "no-store"])
        } catch {
            return Responses.oauthError(error, requestID: context.requestID)
        }
    }

    /// Reads a form body, with RFC 6749's rules: form content type, no repeated parameters.
    private func readForm(_ request: Request, _ context: AuthRequestContext) async -> Result<FormParameters, OAuthError> {
        guard let contentType = request.headers[.contentType], contentType.lowercased().hasPrefix("application/x-www-form-urlencoded") else {
            return .failure(OAuthError(.invalidRequest, "the body must be application/x-www-form-urlencoded"))
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: context.maxUploadSize)
        } catch {
            return .failure(OAuthError(.invalidRequest, "the request body is larger than \(context.maxUploadSize / 1024) KiB", status: .contentTooLarge))
        }
        do {
            return .success(try FormParameters.parse(String(buffer: body)))
        } catch .duplicate(let name) {
            return .failure(OAuthError(.invalidRequest, "parameter '\(name)' appears more than once"))
        } catch {
            return .failure(OAuthError(.invalidRequest, "the body is not correctly form-encoded"))
        }
    }

    // MARK: Authorization endpoint and pages

    /// A page's form body: parsed, missing or malformed (the page's own error), or over the size limit (413).
    enum PageForm {
        case form(FormParameters)
        case invalid
        case tooLarge
    }

    func readPageForm(_ request: Request, _ context: AuthRequestContext) async -> PageForm {
        switch await readForm(request, context) {
        case .success(let form): .form(form)
        case .failure(let error): error.status == .contentTooLarge ? .tooLarge : .invalid
        }
    }

    /// The 413 page for a form over the size limit.
    func tooLargePage(_ context: AuthRequestContext) -> Response {
        Responses.html(
            pages.error(heading: "Request too large", message: "The form sent is larger than \(context.maxUploadSize / 1024) KiB."), status: .contentTooLarge
        )
    }

    func render(_ outcome: AuthorizationOutcome, cookies: [String] = []) -> Response {
        switch outcome {
        case .redirect(let location): Responses.seeOther(location, cookies: cookies)
        case .errorPage(let heading, let message): Responses.html(pages.error(heading: heading, message: message), status: .badRequest, cookies: cookies)
        }
    }

    private func authorizeEndpoint(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let now = clock.now()
        var cookies: [String] = []
        var id = sessionID(request)
        var current = try await sessions.session(id: id, now: now)
        if current == nil {
            let created = try await sessions.create(now: now)
            id = created.id
            current = created.session
            cookies.append(cookie(created.id, maxAge: sessions.anonymousLifetime))
        }
        guard let sessionID = id else { return render(.errorPage(heading: "Error", message: "no session")) }
        let (outcome, requestID) = try await flow.start(query: request.uri.query, sessionID: sessionID, signedIn: current?.userID != nil)
        // Already signed in: skip the sign-in page.
        if let requestID, let session = try await sessions.session(id: sessionID, now: now), session.userID != nil,
            let pendingRequest = try await pending.get(requestID, sessionID: sessionID, now: now)
        {
            return render(try await flow.afterSignIn(requestID: requestID, request: pendingRequest, session: session), cookies: cookies)
        }
        return render(outcome, cookies: cookies)
    }

    private static let expiredMessage = "This sign-in request has expired or was opened in another browser. Return to the application and start again."

    private func loginPage(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let now = clock.now()
        let requestID = request.uri.queryParameters["request"].map(String.init)
        guard let id = sessionID(request), let session = try await sessions.session(id: id, now: now),
            let requestID, let pendingRequest = try await pending.get(requestID, sessionID: id, now: now)
        else {
            return render(.errorPage(heading: "Sign-in expired", message: Self.expiredMessage))
        }
        return Responses.html(pages.login(clientName: pendingRequest.clientName, csrfToken: session.csrfToken, requestID: requestID), formAction: formAction(pendingRequest))
    }

    private func loginSubmit(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let now = clock.now()
        let read = await readPageForm(request, context)
        if case .tooLarge = read { return tooLargePage(context) }
        guard case .form(let form) = read,
            let id = sessionID(request), let session = try await sessions.session(id: id, now: now),
            let csrf = form["csrf_token"], SecureToken.constantTimeEquals(csrf, session.csrfToken),
            let requestID = form["request"], let pendingRequest = try await pending.get(requestID, sessionID: id, now: now)
        else {
            return render(.errorPage(heading: "Sign-in expired", message: Self.expiredMessage))
        }
        let username = form["username"] ?? ""
        let password = form["password"] ?? ""
        do {
            let user = try await tokens.verifyPassword(username: username, password: password, remoteAddress: context.remoteAddress)
            let (newID, signedIn) = try await sessions.signIn(replacing: id, userID: user.id, username: user.username, now: clock.now())
            try await pending.rebind(requestID, toSession: newID)
            let outcome = try await flow.afterSignIn(requestID: requestID, request: pendingRequest, session: signedIn)
            return render(outcome, cookies: [cookie(newID)])
        } catch let error as OAuthError {
            let message: String
            let status: HTTPResponse.Status
            switch (error.code, error.retryAfter) {
            case (.temporarilyUnavailable, let wait):
                message = "Sign-in is temporarily unavailable. Try again in \(wait ?? 1) seconds."
                status = .serviceUnavailable
            case (_, let wait?):
                metrics.loginFailed()
                message = "Too many failed attempts. Try again in \(wait) seconds."
                status = .tooManyRequests
            case (_, nil):
                metrics.loginFailed()
                message = "The username or password is wrong."
                status = .ok
            }
            let page = pages.login(clientName: pendingRequest.clientName, csrfToken: session.csrfToken, requestID: requestID, username: username, error: message)
            return Responses.html(page, status: status, extra: error.retryAfter.map { [.retryAfter: String($0)] } ?? [:], formAction: formAction(pendingRequest))
        }
    }

    private func consentPage(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let now = clock.now()
        let requestID = request.uri.queryParameters["request"].map(String.init)
        guard let id = sessionID(request), let session = try await sessions.session(id: id, now: now),
            let requestID, let pendingRequest = try await pending.get(requestID, sessionID: id, now: now)
        else {
            return render(.errorPage(heading: "Sign-in expired", message: Self.expiredMessage))
        }
        guard let username = session.username else { return Responses.seeOther("/login?request=\(requestID)") }
        return Responses.html(
            pages.consent(clientName: pendingRequest.clientName, username: username, scopes: pendingRequest.scopes, csrfToken: session.csrfToken, requestID: requestID),
            formAction: formAction(pendingRequest)
        )
    }

    private func consentSubmit(_ request: Request, _ context: AuthRequestContext) async throws -> Response {
        let now = clock.now()
        let read = await readPageForm(request, context)
        if case .tooLarge = read { return tooLargePage(context) }
        guard case .form(let form) = read,
            let id = sessionID(request), let session = try await sessions.session(id: id, now: now),
            let csrf = form["csrf_token"], SecureToken.constantTimeEquals(csrf, session.csrfToken),
            let requestID = form["request"], let pendingRequest = try await pending.get(requestID, sessionID: id, now: now)
        else {
            return render(.errorPage(heading: "Sign-in expired", message: Self.expiredMessage))
        }
        guard let decision = form["decision"], decision == "approve" || decision == "deny" else {
            return render(.errorPage(heading: "Invalid request", message: "Choose Allow or Deny."))
        }
        return render(try await flow.consent(approved: decision == "approve", requestID: requestID, request: pendingRequest, session: session))
    }
}
