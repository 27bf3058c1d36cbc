import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import Logging
import JWTKit
import NIOConcurrencyHelpers

/// A successful token response (RFC 6749 §5.1).
struct IssuedTokens: Sendable {
    var accessToken: String
    var expiresIn: Int
    var scope: String
    var refreshToken: String?
    /// RFC 8693 responses name the type of what they issued.
    var issuedTokenType: String?

    var json: String {
        var writer = JSONWriter()
        writer.add("access_token", accessToken)
        writer.add("issued_token_type", issuedTokenType)
        writer.add("token_type", "Bearer")
        writer.add("expires_in", expiresIn)
        writer.add("scope", scope)
        writer.add("refresh_token", refreshToken)
        return writer.finish()
    }
}

/// The token endpoint's grant logic, independent of HTTP: parses nothing, answers `IssuedTokens` or `OAuthError`.
final class TokenService: Sendable {
    let configuration: AuthServerConfiguration
    let store: any AuthStore
    let clock: any AuthClock
    let authenticator: ClientAuthenticator
    let passwords: PasswordHasher
    let throttle: LoginThrottling
    let logger: Logger
    let cache: TokenRecordCache
    let jwts: SelfContainedTokenCache
    let introspector: TokenIntrospector
    let keys: KeyManager
    let exchanges: ExchangeCache

    init(configuration: AuthServerConfiguration, store: any AuthStore, clock: any AuthClock, directory: ClientDirectory, passwords: PasswordHasher, throttle: LoginThrottling, keys: KeyManager, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.clock = clock
        self.authenticator = ClientAuthenticator(directory: directory, throttle: ClientAuthenticationThrottle(clock: clock))
        self.passwords = passwords
        self.throttle = throttle
        self.logger = logger
        self.keys = keys
        self.exchanges = ExchangeCache(reuseFor: configuration.tokens.exchangeReusePeriod)
        self.cache = TokenRecordCache()
        self.jwts = SelfContainedTokenCache()
        self.introspector = TokenIntrospector(
            store: store, directory: directory, cache: cache, users: UsernameCache(), clock: clock, keys: keys, issuer: configuration.issuer, jwts: jwts
        )
    }

    /// Handles one token request.
    func token(form: FormParameters, authorization: String?, remoteAddress: String) async throws(OAuthError) -> IssuedTokens {
        do {
            let client = try await authenticator.authenticate(authorization: authorization, form: form, remoteAddress: remoteAddress)
            guard let grantType = form["grant_type"] else { throw OAuthError(.invalidRequest, "grant_type is required") }
            guard let grant = GrantType(rawValue: grantType), grant != .implicit else {
                throw OAuthError(.unsupportedGrantType, "grant_type '\(grantType)' is not supported")
            }
            guard client.grants.contains(grant.rawValue) else {
                throw OAuthError(.unauthorizedClient, "this client is not registered for the \(grant.rawValue) grant")
            }
            switch grant {
            case .clientCredentials: return try await clientCredentials(client: client, form: form)
            case .password: return try await password(client: client, form: form, remoteAddress: remoteAddress)
            case .authorizationCode: return try await authorizationCode(client: client, form: form)
            case .refreshToken: return try await refresh(client: client, form: form)
            case .tokenExchange: return try await exchange(client: client, form: form)
            case .implicit: throw OAuthError(.unsupportedGrantType, "implicit is not a token-endpoint grant")
            }
        } catch let error as OAuthError {
            throw error
        } catch {
            logger.error("token request failed", metadata: ["error": "\(error)"])
            throw OAuthError.serverFault(error)
        }
    }

    // MARK: Grants

    private func clientCredentials(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        guard !client.isPublic else { throw OAuthError(.unauthorizedClient, "public clients cannot use client_credentials") }
        let scope = try Scopes.resolve(requested: form["scope"], client: client).joined(separator: " ")
        if client.issuesJWTAccessTokens { return try issueSelfContained(client: client, scope: scope) }
        return try await issue(client: client, userID: nil, scope: scope, grant: .clientCredentials, familyID: nil, familyExpiresAt: nil, authTime: nil)
    }

    private func password(client: ClientRecord, form: FormParameters, remoteAddress: String) async throws -> IssuedTokens {
        guard !client.isPublic else { throw OAuthError(.unauthorizedClient, "public clients cannot use the password grant") }
        guard let username = form["username"], let password = form["password"] else {
            throw OAuthError(.invalidRequest, "username and password are required")
        }
        let scope = try Scopes.resolve(requested: form["scope"], client: client).joined(separator: " ")
        let user = try await verifyPassword(username: username, password: password, remoteAddress: remoteAddress)
        let now = clock.now()
        return try await issue(
            client: client, userID: user.id, scope: scope, grant: .password, familyID: SecureToken.generate(),
            familyExpiresAt: now + configuration.tokens.refreshTokenAbsoluteLifetime, authTime: now
        )
    }

    private func authorizationCode(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        guard let code = form["code"] else { throw OAuthError(.invalidRequest, "code is required") }
        let now = clock.now()
        let hash = SecureToken.hash(code)
        let request = AuthorizationCodeRedemption.Request(clientID: client.id, redirectURI: form["redirect_uri"], codeVerifier: form["code_verifier"])
        // The binding is checked on the code as stored, before anything marks it used (a failed attempt burns nothing).
        switch AuthorizationCodeRedemption.decide(try await store.code(hash: hash), request: request, now: now) {
        case .refuse(let error):
            throw error
        case .refuseAndRevoke(let familyID, let error):
            try await codeReplayed(hash: hash, familyID: familyID, client: client, now: now)
            throw error
        case .redeem(let record):
            // The tokens are made first and stored in the transaction that marks the code used: a database failure
            // between the two cannot burn the code (the retry is a first use), and no replay can see the code used
            // before its tokens exist, so the replay's revocation always reaches them (no read-back needed).
            let prepared = try await prepareIssue(
                client: client, userID: record.userID, scope: record.scope, grant: .authorizationCode, familyID: record.familyID,
                familyExpiresAt: now + configuration.tokens.refreshTokenAbsoluteLifetime, authTime: record.authTime
            )
            switch try await store.redeemCode(hash: hash, at: now, issuing: prepared.records) {
            case .redeemed:
                cache.put(prepared.records.filter { $0.kind == .access }, now: prepared.now)
                return prepared.issued
            case .alreadyUsed:
                // A concurrent redemption with the same binding marked it first: this one is the replay.
                try await codeReplayed(hash: hash, familyID: record.familyID, client: client, now: now)
                throw AuthorizationCodeRedemption.replayError
            case .notFound:
                throw OAuthError(.invalidGrant, "the authorization code is invalid")
            }
        }
    }

    /// Records a replay of a code and revokes what it issued (the store first, then this process's cache).
    private func codeReplayed(hash: String, familyID: String, client: ClientRecord, now: Int) async throws {
        try await store.recordCodeReplay(hash: hash, familyID: familyID, at: now)
        cache.markFamilyRevoked(familyID, now: clock.now())
        logger.warning("authorization code replayed; token family revoked", metadata: ["client_id": "\(client.id)"])
    }

    private func refresh(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        guard let presented = form["refresh_token"] else { throw OAuthError(.invalidRequest, "refresh_token is required") }
        let now = clock.now()
        guard let locator = TokenLocator(token: presented), var token = try await store.token(locator) else {
            throw OAuthError(.invalidGrant, "the refresh token is invalid, expired or revoked")
        }
        let grace = configuration.tokens.refreshTokenReuseGrace
        var decision = RefreshRotation.decide(token, clientID: client.id, requestedScope: form["scope"], now: now, grace: grace)
        if case .rotate(let requested) = decision {
            // The successors are made first and stored in the transaction that marks the token rotated, so a
            // database failure between the two cannot leave it rotated without successors.
            let scope = try Scopes.stillRegistered(requested, registered: client.scopes)
            let prepared = try await prepareIssue(
                client: client, userID: token.userID, scope: scope, grant: .refreshToken, familyID: token.familyID,
                familyExpiresAt: token.familyExpiresAt, authTime: token.authTime
            )
            switch try await store.rotate(locator, at: now, successors: prepared.records) {
            case .rotatedNow:
                cache.put(prepared.records.filter { $0.kind == .access }, now: now)
                return prepared.issued
            case .rotatedBefore(let current), .revoked(let current):
                token = current  // a concurrent request got there first: decide again on what it left
                decision = RefreshRotation.decide(token, clientID: client.id, requestedScope: form["scope"], now: now, grace: grace)
            case .notFound:
                throw OAuthError(.invalidGrant, "the refresh token is invalid, expired or revoked")
            }
        }
        switch decision {
        case .refuse(let error):
            throw error
        case .revokeFamily(let familyID, let error):
            try await store.revokeFamily(familyID)
            cache.markFamilyRevoked(familyID, now: clock.now())
            logger.warning("rotated refresh token reused; token family revoked", metadata: ["client_id": "\(client.id)"])
            throw error
        case .rotate:
            // Decided again after a lost race, a token is never unrotated: `rotate` cannot be the second decision.
            throw OAuthError(.invalidGrant, "the refresh token is invalid, expired or revoked")
        case .reissueWithinGrace(let requested):
            let scope = try Scopes.stillRegistered(requested, registered: client.scopes)
            // The successor's plaintext is not kept (only its hash), so it cannot be sent again; a second refresh
            // token would fork the family. An access token alone keeps one line: a client that lost the first
            // response keeps its old refresh token, which stops working when the grace ends.
            return try await issue(
                client: client, userID: token.userID, scope: scope, grant: .refreshToken, familyID: token.familyID,
                familyExpiresAt: token.familyExpiresAt, authTime: token.authTime, withRefreshToken: false
            )
        }
    }

    // MARK: Issuing

    /// Creates an access token (and a refresh token when the client may refresh and the grant involves a user),
    /// stores their hashes durably, and only then returns them.
    func issue(client: ClientRecord, userID: String?, scope: String, grant: GrantType, familyID: String?, familyExpiresAt: Int?, authTime: Int?, withRefreshToken: Bool = true) async throws -> IssuedTokens {
        let prepared = try await prepareIssue(
            client: client, userID: userID, scope: scope, grant: grant, familyID: familyID, familyExpiresAt: familyExpiresAt, authTime: authTime,
            withRefreshToken: withRefreshToken
        )
        try await store.insertTokens(prepared.records)
        cache.put(prepared.records.filter { $0.kind == .access }, now: prepared.now)
        return prepared.issued
    }

    /// A self-contained client_credentials JWT (see `JWTAccessToken`): signed and returned, nothing stored. It is
    /// durable as soon as it is signed, because its key is (`KeyDirectory.save` syncs a key before it can sign).
    /// This process answers for it from memory at once, as it does for the rows it inserts.
    func issueSelfContained(client: ClientRecord, scope: String) throws -> IssuedTokens {
        let now = clock.now()
        let lifetime = min(configuration.tokens.accessTokenLifetime, configuration.tokens.jwtMaxLifetime)
        let claims = AccessTokenClaims(
            iss: configuration.issuer, sub: client.id, aud: audiences(of: client), exp: now + lifetime, iat: now, nbf: now,
            jti: JWTAccessToken.selfContainedJTI(incarnation: client.incarnation), client_id: client.id, scope: scope.isEmpty ? nil : scope,
            auth_time: nil
        )
        let accessToken = try keys.sign(claims, type: AccessTokenClaims.type)
        jwts.put(.init(tokenHash: SecureToken.hash(accessToken), claims: claims, revoked: false, checkedAt: now), now: now)
        return IssuedTokens(accessToken: accessToken, expiresIn: lifetime, scope: scope, refreshToken: nil)
    }

    /// The tokens `issue` hands out and the records it stores for them, before anything is stored.
    func prepareIssue(
        client: ClientRecord, userID: String?, scope: String, grant: GrantType, familyID: String?, familyExpiresAt: Int?, authTime: Int?, withRefreshToken: Bool = true
    ) async throws -> (issued: IssuedTokens, records: [TokenRecord], now: Int) {
        let now = clock.now()
        let withRefresh = withRefreshToken && grant != .clientCredentials && userID != nil && familyID != nil && client.grants.contains(GrantType.refreshToken.rawValue)
        let ids = try await store.allocateTokenIDs(withRefresh ? 2 : 1)
        let accessToken: String
        let accessLocator: TokenLocator
        let lifetime: Int
        if client.issuesJWTAccessTokens {
            // RFC 9068, no `act`: the client's own credential, which verifiers check locally until `exp`.
            lifetime = min(configuration.tokens.accessTokenLifetime, configuration.tokens.jwtMaxLifetime)
            let claims = AccessTokenClaims(
                iss: configuration.issuer, sub: userID ?? client.id, aud: audiences(of: client), exp: now + lifetime, iat: now, nbf: now,
                jti: JWTAccessToken.jti(rowID: ids[0]), client_id: client.id, scope: scope.isEmpty ? nil : scope, auth_time: authTime
            )
            accessToken = try keys.sign(claims, type: AccessTokenClaims.type)
            accessLocator = TokenLocator(id: ids[0], hash: SecureToken.hash(accessToken))
        } else {
            lifetime = configuration.tokens.accessTokenLifetime
            (accessToken, accessLocator) = TokenLocator.make(id: ids[0])
        }
        var records = [
            TokenRecord(
                id: accessLocator.id, tokenHash: accessLocator.hash, kind: .access, clientID: client.id, userID: userID, scope: scope,
                issuedAt: now, expiresAt: now + lifetime, familyID: familyID, familyExpiresAt: familyExpiresAt,
                grantType: grant.rawValue, authTime: authTime
            )
        ]
        var refreshToken: String?
        if withRefresh, let familyID {
            let (token, locator) = TokenLocator.make(id: ids[1])
            let familyEnd = familyExpiresAt ?? now + configuration.tokens.refreshTokenAbsoluteLifetime
            records.append(
                TokenRecord(
                    id: locator.id, tokenHash: locator.hash, kind: .refresh, clientID: client.id, userID: userID, scope: scope,
                    issuedAt: now, expiresAt: min(now + configuration.tokens.refreshTokenIdleLifetime, familyEnd), familyID: familyID,
                    familyExpiresAt: familyEnd, grantType: grant.rawValue, authTime: authTime
                )
            )
            refreshToken = token
        }
        return (IssuedTokens(accessToken: accessToken, expiresIn: lifetime, scope: scope, refreshToken: refreshToken), records, now)
    }

    /// `aud` of JWTs for a client's tokens: its registered audiences, or the server's default.
    func audiences(of client: ClientRecord) -> [String] {
        client.audiences.isEmpty ? [configuration.tokens.jwtAudience] : client.audiences
    }

    // MARK: Token exchange (RFC 8693)

    static let accessTokenType = "urn:ietf:params:oauth:token-type:access_token"
    static let jwtTokenType = "urn:ietf:params:oauth:token-type:jwt"

    /// An opaque access token in, the RFC 9068 JWT that stands for it out (the gateway's phantom-token call).
    private func exchange(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        let subjectToken = try exchangeSubject(client: client, form: form)
        return try exchangeJWT(client: client, form: form, subject: try await introspector.activeToken(subjectToken))
    }

    /// The same from memory, on the event loop (`TokenFastPath`): nil whenever the caller, its grant, the subject
    /// token or anything else is not known from memory or is wrong, so that the router gives the answer.
    func exchangeFromMemory(form: FormParameters, authorization: String?, remoteAddress: String, callerMemo: inout ClientAuthenticator.Memo?) -> IssuedTokens? {
        guard form["grant_type"] == GrantType.tokenExchange.rawValue,
            let client = authenticator.authenticateFromMemory(authorization: authorization, form: form, remoteAddress: remoteAddress, memo: &callerMemo),
            client.grants.contains(GrantType.tokenExchange.rawValue),
            let subjectToken = try? exchangeSubject(client: client, form: form),
            let found = introspector.activeTokenFromMemory(subjectToken), let subject = found,
            let issued = try? exchangeJWT(client: client, form: form, subject: subject)
        else { return nil }
        exchangedFromMemory.withLockedValue { $0 += 1 }
        return issued
    }

    /// Exchanges answered by `exchangeFromMemory` (tests, metrics).
    let exchangedFromMemory = NIOLockedValueBox(0)

    /// Checks an exchange request's parameters; the subject token.
    private func exchangeSubject(client: ClientRecord, form: FormParameters) throws(OAuthError) -> String {
        guard !client.isPublic else { throw OAuthError(.unauthorizedClient, "public clients cannot exchange tokens") }
        guard let subjectToken = form["subject_token"] else { throw OAuthError(.invalidRequest, "subject_token is required") }
        guard form["subject_token_type"] == Self.accessTokenType else {
            throw OAuthError(.invalidRequest, "subject_token_type must be \(Self.accessTokenType)")
        }
        if let requested = form["requested_token_type"], requested != Self.jwtTokenType {
            throw OAuthError(.invalidRequest, "requested_token_type must be \(Self.jwtTokenType)")
        }
        guard form["actor_token"] == nil else { throw OAuthError(.invalidRequest, "actor tokens (delegation) are not supported") }
        return subjectToken
    }

    /// The JWT for a looked-up subject token: reused within the reuse period, else signed now.
    private func exchangeJWT(client: ClientRecord, form: FormParameters, subject found: IntrospectedToken?) throws -> IssuedTokens {
        guard let subject = found, subject.record.kind == .access else {
            // RFC 8693 §2.2.2: an unacceptable subject token is invalid_request.
            throw OAuthError(.invalidRequest, "subject_token is invalid, expired or revoked")
        }
        // The subject's client's current registration bounds the scope (a reduction takes effect here too).
        let scope = try Scopes.narrow(requested: form["scope"], granted: try Scopes.stillRegistered(subject.record.scope, registered: subject.client.scopes))
        let audiences = self.audiences(of: subject.client)
        if let audience = form["audience"], !audiences.contains(audience) {
            throw OAuthError(.invalidTarget, "audience '\(audience)' is not allowed for this token")
        }
        let now = clock.now()
        let cacheKey = ExchangeCache.Key(token: subject.cacheName, caller: client.id, scope: scope, audience: form["audience"])
        if let cached = exchanges.get(cacheKey, tokenHash: subject.record.tokenHash, now: now) {
            return IssuedTokens(accessToken: cached.jwt, expiresIn: max(0, cached.exp - now), scope: scope, refreshToken: nil, issuedTokenType: Self.jwtTokenType)
        }
        // Short-lived: revoking the opaque token reaches the backends within this lifetime (plus the gateway's
        // cache bound), and never longer than the subject token or jwt_max_lifetime.
        let exp = min(subject.record.expiresAt, now + min(configuration.tokens.exchangeJWTLifetime, configuration.tokens.jwtMaxLifetime))
        // `act` (RFC 8693 §4.1) names the caller: a JWT minted for the backends, distinguishable from a client's own.
        let claims = AccessTokenClaims(
            iss: configuration.issuer, sub: subject.subject, aud: form["audience"].map { [$0] } ?? audiences, exp: exp, iat: now, nbf: now,
            jti: SecureToken.generate(), client_id: subject.record.clientID, scope: scope.isEmpty ? nil : scope, auth_time: subject.record.authTime,
            act: .init(sub: client.id)
        )
        let jwt = try keys.sign(claims, type: AccessTokenClaims.type)
        exchanges.put(cacheKey, .init(jwt: jwt, exp: exp, tokenHash: subject.record.tokenHash, mintedAt: now))
        return IssuedTokens(accessToken: jwt, expiresIn: max(0, exp - now), scope: scope, refreshToken: nil, issuedTokenType: Self.jwtTokenType)
    }

    // MARK: Revocation (RFC 7009)

    /// Revokes a token the client owns: a refresh token with its whole family (and the access tokens issued from
    /// it), an access token alone. Unknown tokens, and other clients' tokens, change nothing and reveal nothing.
    func revoke(form: FormParameters, authorization: String?, remoteAddress: String) async throws(OAuthError) {
        do {
            let client = try await authenticator.authenticate(authorization: authorization, form: form, remoteAddress: remoteAddress)
            guard let presented = form["token"] else { throw OAuthError(.invalidRequest, "token is required") }
            guard let kind = JWTAccessToken.classify(presented) else { return }
            guard case .row(let locator) = kind else {
                if case .selfContained(let token) = kind { try await revokeSelfContained(token, client: client) }
                return
            }
            guard let record = try await store.token(locator), record.clientID == client.id else { return }
            if record.kind == .refresh, let familyID = record.familyID {
                try await store.revokeFamily(familyID)
                cache.markFamilyRevoked(familyID, now: clock.now())
            } else {
                try await store.revokeToken(locator)
                cache.markRevoked(id: locator.id)
            }
        } catch let error as OAuthError {
            throw error
        } catch {
            logger.error("revocation failed", metadata: ["error": "\(error)"])
            throw OAuthError.serverFault(error)
        }
    }

    /// Puts a self-contained JWT of this client on the revocation list (durably, before the 200), and answers for
    /// it as revoked in this process at once. One that does not verify, is another client's or has expired
    /// changes nothing (an expired one is inactive anyway).
    private func revokeSelfContained(_ token: JWTAccessToken.SelfContained, client: ClientRecord) async throws {
        let now = clock.now()
        let claims: AccessTokenClaims
        if let cached = jwts.get(token.jti, tokenHash: token.hash, now: now) {
            claims = cached.claims
        } else {
            guard let verified = try? await keys.verifyOwnAccessToken(token.token, issuer: configuration.issuer), verified.jti == token.jti else { return }
            claims = verified
        }
        guard claims.client_id == client.id, claims.act == nil, now < claims.exp else { return }
        try await store.revokeJWT(jti: claims.jti, clientID: client.id, expiresAt: claims.exp)
        jwts.markRevoked(.init(tokenHash: token.hash, claims: claims, revoked: true, checkedAt: now), now: now)
    }

    // MARK: Introspection (RFC 7662, RFC 9701)

    /// Introspection answered from memory (client, token record and user cached): nil when the store must be asked
    /// or the request is not a plain success, so that the async path answers it (errors included). The caller's
    /// authentication is remembered in `callerMemo` (one per connection).
    func introspectFromMemory(form: FormParameters, authorization: String?, remoteAddress: String, callerMemo: inout ClientAuthenticator.Memo?) -> IntrospectionClaims? {
        guard let claims = introspectCached(form: form, authorization: authorization, remoteAddress: remoteAddress, callerMemo: &callerMemo) else { return nil }
        answeredFromMemory.withLockedValue { $0 += 1 }
        return claims
    }

    /// Introspections answered by `introspectFromMemory` (tests, metrics).
    let answeredFromMemory = NIOLockedValueBox(0)

    private func introspectCached(form: FormParameters, authorization: String?, remoteAddress: String, callerMemo: inout ClientAuthenticator.Memo?) -> IntrospectionClaims? {
        guard let caller = authenticator.authenticateFromMemory(authorization: authorization, form: form, remoteAddress: remoteAddress, memo: &callerMemo), !caller.isPublic,
            caller.mayIntrospect,
            let presented = form["token"], let found = introspector.activeTokenFromMemory(presented)
        else { return nil }
        guard let token = found else { return .inactive }
        let audiences = self.audiences(of: token.client)
        return IntrospectionClaims(token, issuer: configuration.issuer, audiences: audiences)
    }

    /// Authenticates a caller allowed to introspect and describes the token.
    func introspect(form: FormParameters, authorization: String?, remoteAddress: String) async throws(OAuthError) -> (caller: ClientRecord, claims: IntrospectionClaims) {
        do {
            let caller = try await authenticator.authenticate(authorization: authorization, form: form, remoteAddress: remoteAddress)
            guard !caller.isPublic, caller.mayIntrospect else {
                throw OAuthError(.invalidClient, "this client is not allowed to introspect tokens")
            }
            guard let presented = form["token"] else { throw OAuthError(.invalidRequest, "token is required") }
            guard let token = try await introspector.activeToken(presented) else { return (caller, .inactive) }
            let audiences = self.audiences(of: token.client)
            return (caller, IntrospectionClaims(token, issuer: configuration.issuer, audiences: audiences))
        } catch let error as OAuthError {
            throw error
        } catch {
            logger.error("introspection failed", metadata: ["error": "\(error)"])
            throw OAuthError.serverFault(error)
        }
    }
}
