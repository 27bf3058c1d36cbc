import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import Logging
import NIOConcurrencyHelpers

/// A successful token response (RFC 6749 §5.1).
struct IssuedTokens: Sendable {
    var accessToken: String
    var expiresIn: Int
    var scope: String
    var refreshToken: String?

    var json: String {
        var writer = JSONWriter()
        writer.add("access_token", accessToken)
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
    let throttle: NIOLockedValueBox<LoginThrottle>
    let logger: Logger

    init(configuration: AuthServerConfiguration, store: any AuthStore, clock: any AuthClock, directory: ClientDirectory, passwords: PasswordHasher, throttle: NIOLockedValueBox<LoginThrottle>, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.clock = clock
        self.authenticator = ClientAuthenticator(directory: directory)
        self.passwords = passwords
        self.throttle = throttle
        self.logger = logger
    }

    /// Handles one token request.
    func token(form: FormParameters, authorization: String?, remoteAddress: String) async throws(OAuthError) -> IssuedTokens {
        do {
            let client = try await authenticator.authenticate(authorization: authorization, form: form)
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
            case .implicit: throw OAuthError(.unsupportedGrantType, "implicit is not a token-endpoint grant")
            }
        } catch let error as OAuthError {
            throw error
        } catch {
            logger.error("token request failed", metadata: ["error": "\(error)"])
            throw OAuthError(.serverError, "the server could not complete the request")
        }
    }

    // MARK: Grants

    private func clientCredentials(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        guard !client.isPublic else { throw OAuthError(.unauthorizedClient, "public clients cannot use client_credentials") }
        let scope = try Scopes.resolve(requested: form["scope"], allowed: client.scopes).joined(separator: " ")
        return try await issue(client: client, userID: nil, scope: scope, grant: .clientCredentials, familyID: nil, familyExpiresAt: nil, authTime: nil)
    }

    private func password(client: ClientRecord, form: FormParameters, remoteAddress: String) async throws -> IssuedTokens {
        guard !client.isPublic else { throw OAuthError(.unauthorizedClient, "public clients cannot use the password grant") }
        guard let username = form["username"], let password = form["password"] else {
            throw OAuthError(.invalidRequest, "username and password are required")
        }
        let scope = try Scopes.resolve(requested: form["scope"], allowed: client.scopes).joined(separator: " ")
        let user = try await verifyPassword(username: username, password: password, remoteAddress: remoteAddress)
        let now = clock.now()
        return try await issue(
            client: client, userID: user.id, scope: scope, grant: .password, familyID: SecureToken.generate(),
            familyExpiresAt: now + configuration.tokens.refreshTokenAbsoluteLifetime, authTime: now
        )
    }

    /// Checks a password under the login throttle (per username and per address). Shared with the login page.
    func verifyPassword(username: String, password: String, remoteAddress: String) async throws -> UserRecord {
        let userKey = "user:" + username.lowercased()
        let addressKey = "ip:" + remoteAddress
        let now = clock.now()
        let wait = throttle.withLockedValue { throttle in
            max(throttle.retryAfter(userKey, now: now) ?? 0, throttle.retryAfter(addressKey, now: now) ?? 0)
        }
        guard wait == 0 else {
            throw OAuthError(.invalidGrant, "too many failed sign-in attempts; try again in \(wait) s", retryAfter: wait)
        }
        let user = try await store.user(username: username)
        let matches = try await passwords.verify(password, hash: user?.passwordHash ?? PasswordHasher.decoyHash)
        guard let user, matches else {
            let failedAt = clock.now()
            throttle.withLockedValue { throttle in
                throttle.recordFailure(userKey, now: failedAt)
                throttle.recordFailure(addressKey, now: failedAt)
            }
            logger.notice("sign-in failed", metadata: ["remote": "\(remoteAddress)"])
            throw OAuthError(.invalidGrant, "the username or password is wrong")
        }
        // Only the user's count resets: one good account must not wipe an address's record of guessing others.
        throttle.withLockedValue { $0.recordSuccess(userKey) }
        return user
    }

    private func authorizationCode(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        guard let code = form["code"] else { throw OAuthError(.invalidRequest, "code is required") }
        let now = clock.now()
        let found = try await store.redeemCode(hash: SecureToken.hash(code), at: now)
        let request = AuthorizationCodeRedemption.Request(clientID: client.id, redirectURI: form["redirect_uri"], codeVerifier: form["code_verifier"])
        switch AuthorizationCodeRedemption.decide(found, request: request, now: now) {
        case .refuse(let error):
            throw error
        case .refuseAndRevoke(let familyID, let error):
            try await store.revokeFamily(familyID)
            logger.warning("authorization code replayed; token family revoked", metadata: ["client_id": "\(client.id)"])
            throw error
        case .issue(let record):
            return try await issue(
                client: client, userID: record.userID, scope: record.scope, grant: .authorizationCode, familyID: record.familyID,
                familyExpiresAt: now + configuration.tokens.refreshTokenAbsoluteLifetime, authTime: record.authTime
            )
        }
    }

    private func refresh(client: ClientRecord, form: FormParameters) async throws -> IssuedTokens {
        guard let presented = form["refresh_token"] else { throw OAuthError(.invalidRequest, "refresh_token is required") }
        let now = clock.now()
        guard let locator = TokenLocator(token: presented), var token = try await store.token(locator) else {
            throw OAuthError(.invalidGrant, "the refresh token is invalid, expired or revoked")
        }
        let grace = configuration.tokens.refreshTokenReuseGrace
        var decision = RefreshRotation.decide(token, clientID: client.id, requestedScope: form["scope"], now: now, grace: grace)
        if case .rotate = decision {
            switch try await store.markRotated(locator, at: now) {
            case .rotatedNow:
                break
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
            logger.warning("rotated refresh token reused; token family revoked", metadata: ["client_id": "\(client.id)"])
            throw error
        case .rotate(let scope), .reissueWithinGrace(let scope):
            return try await issue(
                client: client, userID: token.userID, scope: scope, grant: .refreshToken, familyID: token.familyID,
                familyExpiresAt: token.familyExpiresAt, authTime: token.authTime
            )
        }
    }

    // MARK: Issuing

    /// Creates an access token (and a refresh token when the client may refresh and the grant involves a user),
    /// stores their hashes durably, and only then returns them.
    func issue(client: ClientRecord, userID: String?, scope: String, grant: GrantType, familyID: String?, familyExpiresAt: Int?, authTime: Int?) async throws -> IssuedTokens {
        let now = clock.now()
        let withRefresh = grant != .clientCredentials && userID != nil && familyID != nil && client.grants.contains(GrantType.refreshToken.rawValue)
        let ids = store.allocateTokenIDs(withRefresh ? 2 : 1)
        let (accessToken, accessLocator) = TokenLocator.make(id: ids[0])
        let lifetime = configuration.tokens.accessTokenLifetime
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
        try await store.insertTokens(records)
        return IssuedTokens(accessToken: accessToken, expiresIn: lifetime, scope: scope, refreshToken: refreshToken)
    }
}
