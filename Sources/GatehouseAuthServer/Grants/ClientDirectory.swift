import GatehouseStore
import GatehouseTokens
import NIOConcurrencyHelpers
import Synchronization

/// Client lookups for every request, served from memory and re-read from the store after `ttl` seconds, so a
/// client removed with `gatehouse clients remove` (another process) stops working within that time.
final class ClientDirectory: Sendable {
    private struct Cached {
        var client: ClientRecord?
        var loadedAt: Int
    }

    private let store: any AuthStore
    private let clock: any AuthClock
    private let ttl: Int
    private let cache = NIOLockedValueBox([String: Cached]())
    /// Bumped by `invalidate()`: remembered authentications made before it no longer count.
    private let generationCounter = Atomic<Int>(0)

    var generation: Int { generationCounter.load(ordering: .acquiring) }

    init(store: any AuthStore, clock: any AuthClock, ttl: Int = 5) {
        self.store = store
        self.clock = clock
        self.ttl = ttl
    }

    func client(id: String) async throws -> ClientRecord? {
        let now = clock.now()
        if let cached = cache.withLockedValue({ $0[id] }), now - cached.loadedAt < ttl { return cached.client }
        let client = try await store.client(id: id)
        cache.withLockedValue { cache in
            if cache.count > 10_000 { cache.removeAll(keepingCapacity: true) }  // unknown ids must not grow it without bound
            cache[id] = Cached(client: client, loadedAt: now)
        }
        return client
    }

    /// The client from memory when it was loaded within `ttl`: `.some(nil)` for an id known not to exist, nil when
    /// only the store can say (the event-loop fast path then hands the request to the async path).
    func cachedClient(id: String) -> ClientRecord?? {
        cachedEntry(id: id).map { $0.client }
    }

    /// `cachedClient(id:)` with the time (clock seconds) until which the entry is used.
    func cachedEntry(id: String) -> (client: ClientRecord?, validUntil: Int)? {
        let now = clock.now()
        guard let cached = cache.withLockedValue({ $0[id] }), now - cached.loadedAt < ttl else { return nil }
        return (cached.client, cached.loadedAt + ttl)
    }

    var now: Int { clock.now() }

    func invalidate() {
        cache.withLockedValue { $0.removeAll() }
        generationCounter.add(1, ordering: .releasing)
    }
}

/// Client authentication at the token endpoint (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`,
/// or `none` for public clients. Any failure is `invalid_client`, answered 401 with `WWW-Authenticate: Basic`.
struct ClientAuthenticator: Sendable {
    let directory: ClientDirectory
    let throttle: ClientAuthenticationThrottle

    /// Authenticates the caller, under the failed-authentication throttle (per client id and per address).
    func authenticate(authorization: String?, form: FormParameters, remoteAddress: String) async throws -> ClientRecord {
        let (clientID, secret) = try Self.credentials(authorization: authorization, form: form)
        if let wait = throttle.retryAfter(clientID: clientID, address: remoteAddress) {
            throw OAuthError(.invalidClient, "too many failed client authentications; try again in \(wait) s", retryAfter: wait)
        }
        guard let client = try await directory.client(id: clientID) else {
            throttle.recordFailure(clientID: nil, address: remoteAddress)
            throw OAuthError(.invalidClient, "client authentication failed")
        }
        do {
            return try Self.verify(client, secret: secret)
        } catch {
            throttle.recordFailure(clientID: clientID, address: remoteAddress)
            throw error
        }
    }

    /// The last successful HTTP Basic authentication on one connection. The same `Authorization` value with no
    /// form credentials authenticates the same client until the directory's cached record of it expires or the
    /// directory is invalidated: then the credentials are checked again.
    struct Memo {
        let authorization: String
        let client: ClientRecord
        let validUntil: Int
        let generation: Int
    }

    /// `authenticate(authorization:form:)` from memory only: nil when the client is not cached or anything fails (the
    /// caller then takes the async path, which gives the error its proper answer). Remembers a success in `memo`
    /// (held per connection).
    func authenticateFromMemory(authorization: String?, form: FormParameters, remoteAddress: String, memo: inout Memo?) -> ClientRecord? {
        if let memo, let authorization, memo.authorization == authorization, form["client_id"] == nil, form["client_secret"] == nil,
            memo.generation == directory.generation, directory.now < memo.validUntil
        {
            return memo.client
        }
        let generation = directory.generation
        guard let (clientID, secret) = try? Self.credentials(authorization: authorization, form: form),
            throttle.retryAfter(clientID: clientID, address: remoteAddress) == nil,  // throttled: the async path answers
            let entry = directory.cachedEntry(id: clientID), let client = entry.client,
            let verified = try? Self.verify(client, secret: secret)
        else { return nil }
        if let authorization { memo = Memo(authorization: authorization, client: verified, validUntil: entry.validUntil, generation: generation) }
        return verified
    }

    /// The client id and secret a request presents (HTTP Basic, or the form).
    static func credentials(authorization: String?, form: FormParameters) throws -> (String, String?) {
        if let authorization {
            guard authorization.count > 6, authorization.prefix(6).lowercased() == "basic " else {
                throw OAuthError(.invalidClient, "unsupported authorization scheme; use HTTP Basic")
            }
            guard let decoded = Base64URL.decodeStandard(authorization.dropFirst(6).drop { $0 == " " }),
                let text = String(validating: decoded, as: UTF8.self),
                let colon = text.firstIndex(of: ":"),
                let id = FormParameters.decode(text[..<colon]),
                let password = FormParameters.decode(text[text.index(after: colon)...])
            else {
                throw OAuthError(.invalidClient, "malformed HTTP Basic credentials")
            }
            guard form["client_secret"] == nil else {
                throw OAuthError(.invalidRequest, "use one client authentication method, not both")
            }
            if let formID = form["client_id"], formID != id {
                throw OAuthError(.invalidRequest, "client_id does not match the authenticated client")
            }
            return (id, password)
        } else if let id = form["client_id"] {
            return (id, form["client_secret"])
        } else {
            throw OAuthError(.invalidClient, "client authentication is required")
        }
    }

    /// A public client presents no secret; a confidential one its secret, compared by hash in constant time.
    static func verify(_ client: ClientRecord, secret: String?) throws -> ClientRecord {
        if client.isPublic {
            guard secret == nil || secret == "" else { throw OAuthError(.invalidClient, "client authentication failed") }
            return client
        }
        guard let secret, !secret.isEmpty, let stored = client.secretHash,
            SecureToken.constantTimeEquals(SecureToken.hash(secret), stored)
        else {
            throw OAuthError(.invalidClient, "client authentication failed")
        }
        return client
    }
}
