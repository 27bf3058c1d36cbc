import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import Logging

/// What the authorization endpoint and the sign-in pages answer, independent of HTTP.
enum AuthorizationOutcome: Equatable {
    /// Show an error page; never redirect (unknown client or redirect URI).
    case errorPage(heading: String, message: String)
    /// 303 to this URL (the client's redirect URI with a code, token or error, or a sign-in page).
    case redirect(String)
}

/// The authorization endpoint (RFC 6749 §3.1, §4.1.1, §4.2.1) and the steps after sign-in and consent.
struct AuthorizationFlow: Sendable {
    let configuration: AuthServerConfiguration
    let store: any AuthStore
    let clock: any AuthClock
    let directory: ClientDirectory
    let pending: PendingAuthorizations
    let logger: Logger
    /// The configuration file's clients by id, for what only the file says of a client (`application_type`,
    /// `first_party`); a client added with the CLI is a web client that is not first-party.
    let registrations: [String: ClientRegistration]

    init(configuration: AuthServerConfiguration, store: any AuthStore, clock: any AuthClock, directory: ClientDirectory, pending: PendingAuthorizations, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.clock = clock
        self.directory = directory
        self.pending = pending
        self.logger = logger
        self.registrations = Dictionary(configuration.clients.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Validates an authorization request. Until the client and redirect URI are known good, errors are pages;
    /// after that they go back to the client with `error`, `state` and `iss`.
    /// - Parameter signedIn: whether the session is signed in (its pending request is then bounded with the
    ///   signed-in ones, out of reach of anonymous floods).
    func start(query: String?, sessionID: String, signedIn: Bool = false) async throws -> (outcome: AuthorizationOutcome, requestID: String?) {
        let parameters: FormParameters
        do {
            parameters = try FormParameters.parse(query ?? "")
        } catch .duplicate(let name) {
            return (.errorPage(heading: "Invalid request", message: "The parameter '\(name)' appears more than once."), nil)
        } catch {
            return (.errorPage(heading: "Invalid request", message: "The request is not correctly URL-encoded."), nil)
        }
        guard let clientID = parameters["client_id"] else {
            return (.errorPage(heading: "Invalid request", message: "The request names no client (client_id is missing)."), nil)
        }
        guard let client = try await directory.client(id: clientID) else {
            return (.errorPage(heading: "Unknown application", message: "No application is registered as '\(clientID)'."), nil)
        }
        let registration = registrations[client.id]
        let isNative = registration?.applicationType == .native
        let redirectURI: String
        if let requested = parameters["redirect_uri"] {
            guard client.redirectURIs.contains(where: { Self.redirectURIMatches(registered: $0, requested: requested, variableLoopbackPort: isNative) }) else {
                return (.errorPage(heading: "Invalid redirect URI", message: "The redirect URI is not registered for this application."), nil)
            }
            redirectURI = requested
        } else {
            guard client.redirectURIs.count == 1 else {
                return (.errorPage(heading: "Invalid request", message: "redirect_uri is required: this application registered several."), nil)
            }
            redirectURI = client.redirectURIs[0]
        }

        let state = parameters["state"]
        let responseTypeText = parameters["response_type"]
        let useFragment = responseTypeText == "token"
        func fail(_ code: OAuthError.Code, _ description: String) -> (AuthorizationOutcome, String?) {
            (.redirect(errorRedirect(redirectURI, code: code, description: description, state: state, fragment: useFragment)), nil)
        }

        guard let responseTypeText else { return fail(.invalidRequest, "response_type is required") }
        guard let responseType = PendingAuthorization.ResponseType(rawValue: responseTypeText) else {
            return fail(.unsupportedResponseType, "response_type must be code or token")
        }
        switch responseType {
        case .code:
            guard client.grants.contains(GrantType.authorizationCode.rawValue) else {
                return fail(.unauthorizedClient, "this client is not registered for the authorization_code grant")
            }
        case .token:
            guard client.grants.contains(GrantType.implicit.rawValue) else {
                return fail(.unauthorizedClient, "this client is not registered for the implicit grant")
            }
        }

        let scopes: [String]
        do {
            scopes = try Scopes.resolve(requested: parameters["scope"], client: client)
        } catch {
            return fail(error.code, error.description)
        }

        var challenge: String?
        if responseType == .code {
            let method = parameters["code_challenge_method"]
            challenge = parameters["code_challenge"]
            if let challenge {
                guard method == PKCE.s256 else { return fail(.invalidRequest, "code_challenge_method must be S256") }
                guard PKCE.isValidChallenge(challenge) else { return fail(.invalidRequest, "code_challenge must be 43 base64url characters (S256)") }
            } else {
                if method != nil { return fail(.invalidRequest, "code_challenge_method without code_challenge") }
                if client.isPublic || configuration.pkce.requireForConfidentialClients {
                    return fail(.invalidRequest, "code_challenge is required (PKCE with S256)")
                }
            }
        }

        let now = clock.now()
        let request = PendingAuthorization(
            clientID: client.id, clientName: client.name, responseType: responseType, redirectURI: redirectURI,
            redirectURIWasGiven: parameters["redirect_uri"] != nil, scopes: scopes, state: state, codeChallenge: challenge,
            sessionHash: SecureToken.hash(sessionID), expiresAt: now + pending.lifetime,
            asksConsentEveryTime: client.isPublic && registration?.firstParty != true
        )
        let requestID = try await pending.add(request, signedIn: signedIn, now: now)
        return (.redirect("/login?request=\(requestID)"), requestID)
    }

    /// After sign-in: straight to the client when the user consented to these scopes before (and the client may use
    /// a remembered consent), else the consent page.
    func afterSignIn(requestID: String, request: PendingAuthorization, session: BrowserSession) async throws -> AuthorizationOutcome {
        guard let userID = session.userID else { return .redirect("/login?request=\(requestID)") }
        guard !request.asksConsentEveryTime else { return .redirect("/consent?request=\(requestID)") }
        let consented = try await store.consentedScopes(userID: userID, clientID: request.clientID)
        if Set(request.scopes).isSubset(of: consented) {
            return try await complete(requestID: requestID, request: request, session: session)
        }
        return .redirect("/consent?request=\(requestID)")
    }

    /// After consent: remembers it, then completes.
    func consent(approved: Bool, requestID: String, request: PendingAuthorization, session: BrowserSession) async throws -> AuthorizationOutcome {
        guard let userID = session.userID else { return .redirect("/login?request=\(requestID)") }
        guard approved else {
            try await pending.take(requestID)
            return .redirect(errorRedirect(request.redirectURI, code: .accessDenied, description: "the user denied the request", state: request.state, fragment: request.responseType == .token))
        }
        try await store.saveConsent(userID: userID, clientID: request.clientID, scopes: Set(request.scopes), at: clock.now())
        return try await complete(requestID: requestID, request: request, session: session)
    }

    /// Issues the code (or, for implicit, the access token) and sends the browser back to the client.
    private func complete(requestID: String, request: PendingAuthorization, session: BrowserSession) async throws -> AuthorizationOutcome {
        guard let userID = session.userID else { return .redirect("/login?request=\(requestID)") }
        // Taking the request decides who completes it: of two submissions racing (a double click, two replicas),
        // exactly one issues a code.
        guard try await pending.take(requestID) else {
            return .errorPage(heading: "Sign-in expired", message: "This sign-in request was already completed. Return to the application and start again.")
        }
        let now = clock.now()
        let scope = request.scopes.joined(separator: " ")
        switch request.responseType {
        case .code:
            let code = SecureToken.generate()
            try await store.insertCode(
                AuthorizationCodeRecord(
                    codeHash: SecureToken.hash(code), clientID: request.clientID, userID: userID, redirectURI: request.redirectURI,
                    redirectURIWasGiven: request.redirectURIWasGiven, scope: scope, codeChallenge: request.codeChallenge,
                    authTime: session.authTime ?? now, issuedAt: now, expiresAt: now + configuration.tokens.authorizationCodeLifetime,
                    familyID: SecureToken.generate()
                )
            )
            return .redirect(Self.append(to: request.redirectURI, [("code", code), ("state", request.state), ("iss", configuration.issuer)], fragment: false))
        case .token:
            // Implicit: a short-lived access token in the fragment, never a refresh token (RFC 6749 §4.2.2).
            let (token, locator) = TokenLocator.make(id: try await store.allocateTokenIDs(1)[0])
            let lifetime = configuration.tokens.implicitAccessTokenLifetime
            try await store.insertTokens([
                TokenRecord(
                    id: locator.id, tokenHash: locator.hash, kind: .access, clientID: request.clientID, userID: userID, scope: scope,
                    issuedAt: now, expiresAt: now + lifetime, familyID: nil, familyExpiresAt: nil, grantType: GrantType.implicit.rawValue,
                    authTime: session.authTime
                )
            ])
            return .redirect(
                Self.append(
                    to: request.redirectURI,
                    [("access_token", token), ("token_type", "Bearer"), ("expires_in", String(lifetime)), ("scope", scope), ("state", request.state), ("iss", configuration.issuer)],
                    fragment: true
                )
            )
        }
    }

    func errorRedirect(_ redirectURI: String, code: OAuthError.Code, description: String, state: String?, fragment: Bool) -> String {
        Self.append(to: redirectURI, [("error", code.rawValue), ("error_description", description), ("state", state), ("iss", configuration.issuer)], fragment: fragment)
    }

    static func append(to uri: String, _ parameters: [(String, String?)], fragment: Bool) -> String {
        let encoded = FormParameters.encode(parameters)
        if fragment { return uri + "#" + encoded }
        return uri + (uri.contains("?") ? "&" : "?") + encoded
    }

    /// Exact string match, except that for a native app (`variableLoopbackPort`) a loopback http redirect URI may
    /// use any port (RFC 8252 §7.3). A browser client gets no such leeway: anyone who can open a URL in the
    /// user's browser could otherwise send its codes or tokens to whatever listens on another loopback port.
    static func redirectURIMatches(registered: String, requested: String, variableLoopbackPort: Bool) -> Bool {
        if registered == requested { return true }
        guard variableLoopbackPort, let registeredURL = ParsedURL(registered), let requestedURL = ParsedURL(requested),
            registeredURL.scheme == "http", requestedURL.scheme == "http", registeredURL.isLoopback,
            requestedURL.fragment == nil
        else { return false }
        return registeredURL.host == requestedURL.host && registeredURL.path == requestedURL.path && registeredURL.query == requestedURL.query
    }
}
