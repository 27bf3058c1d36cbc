import GatehouseTokens
import NIOConcurrencyHelpers

/// A browser's sign-in session. The cookie carries a random id; the server keeps only its hash.
struct BrowserSession: Sendable, Equatable {
    var csrfToken: String
    var userID: String?
    var username: String?
    var authTime: Int?
    var expiresAt: Int
}

/// Browser sessions, in memory: a restart signs everyone out (tokens already issued stay valid).
///
/// Anonymous sessions (one per browser that opened `/authorize`, made for nothing more than a request) and
/// signed-in ones (each paid for with a password check) are kept apart, each bounded on its own: a flood of
/// anonymous requests drops the oldest anonymous sessions and never a signed-in one. Each tier is a
/// `BoundedExpiringMap`, so an insertion at the cap costs O(1) under the lock, not a scan.
final class SessionStore: Sendable {
    private struct Tiers: Sendable {
        var anonymous: BoundedExpiringMap<BrowserSession>
        var signedIn: BoundedExpiringMap<BrowserSession>
    }

    private let tiers: NIOLockedValueBox<Tiers>
    private let lifetime: Int
    /// Anonymous sessions live only as long as a sign-in may take: the pending request they carry lives 10 min.
    let anonymousLifetime: Int

    /// - Parameters:
    ///   - lifetime: seconds a signed-in session lasts.
    ///   - maxSignedIn: signed-in sessions kept at most; past it the oldest is dropped.
    ///   - maxAnonymous: anonymous sessions kept at most; past it the oldest is dropped.
    init(lifetime: Int, maxSignedIn: Int = 200_000, maxAnonymous: Int = 50_000, anonymousLifetime: Int = 900) {
        self.lifetime = lifetime
        self.anonymousLifetime = min(anonymousLifetime, lifetime)
        self.tiers = NIOLockedValueBox(Tiers(anonymous: .init(capacity: maxAnonymous), signedIn: .init(capacity: maxSignedIn)))
    }

    /// Starts an anonymous session; returns the cookie value and the session.
    func create(now: Int) -> (id: String, session: BrowserSession) {
        let id = SecureToken.generate()
        let session = BrowserSession(csrfToken: SecureToken.generate(), expiresAt: now + anonymousLifetime)
        let key = SecureToken.hash(id)
        tiers.withLockedValue { $0.anonymous.insert(key, session, expiresAt: session.expiresAt) }
        return (id, session)
    }

    func session(id: String?, now: Int) -> BrowserSession? {
        guard let id, !id.isEmpty else { return nil }
        let key = SecureToken.hash(id)
        return tiers.withLockedValue { tiers in
            tiers.signedIn.value(key, now: now) ?? tiers.anonymous.value(key, now: now)
        }
    }

    /// Signs the user in under a new session id (the old id is dropped: no session fixation).
    func signIn(replacing oldID: String, userID: String, username: String, now: Int) -> String {
        let id = SecureToken.generate()
        let session = BrowserSession(csrfToken: SecureToken.generate(), userID: userID, username: username, authTime: now, expiresAt: now + lifetime)
        let oldKey = SecureToken.hash(oldID)
        let key = SecureToken.hash(id)
        tiers.withLockedValue { tiers in
            tiers.anonymous.remove(oldKey)
            tiers.signedIn.remove(oldKey)
            tiers.signedIn.insert(key, session, expiresAt: session.expiresAt)
        }
        return id
    }

    /// Ends a session, anonymous or signed in; false when there was none.
    @discardableResult
    func signOut(id: String) -> Bool {
        let key = SecureToken.hash(id)
        return tiers.withLockedValue { tiers in
            let signedIn = tiers.signedIn.remove(key) != nil
            let anonymous = tiers.anonymous.remove(key) != nil
            return signedIn || anonymous
        }
    }

    /// Sessions held: anonymous and signed in.
    var counts: (anonymous: Int, signedIn: Int) {
        tiers.withLockedValue { ($0.anonymous.count, $0.signedIn.count) }
    }

    func purge(now: Int) {
        tiers.withLockedValue { tiers in
            tiers.anonymous.purge(now: now)
            tiers.signedIn.purge(now: now)
        }
    }
}

/// An authorization request waiting for sign-in or consent, bound to the browser session that started it.
struct PendingAuthorization: Sendable, Equatable {
    enum ResponseType: String, Sendable {
        case code
        case token
    }

    var clientID: String
    var clientName: String
    var responseType: ResponseType
    var redirectURI: String
    var redirectURIWasGiven: Bool
    var scopes: [String]
    var state: String?
    var codeChallenge: String?
    var sessionHash: String
    var expiresAt: Int
    /// A public client that is not first-party: a remembered consent is not enough, the user is asked again.
    var asksConsentEveryTime: Bool = false
}

/// Pending authorization requests by random id (10 minutes to complete sign-in and consent). Like sessions, the
/// requests of anonymous browsers and those of signed-in ones are bounded apart, so a flood of anonymous
/// `/authorize` requests cannot drop a signed-in user's request on its way to consent.
final class PendingAuthorizations: Sendable {
    private struct Tiers: Sendable {
        var anonymous: BoundedExpiringMap<PendingAuthorization>
        var signedIn: BoundedExpiringMap<PendingAuthorization>
    }

    private let requests: NIOLockedValueBox<Tiers>
    let lifetime = 600

    init(maxAnonymous: Int = 50_000, maxSignedIn: Int = 100_000) {
        self.requests = NIOLockedValueBox(Tiers(anonymous: .init(capacity: maxAnonymous), signedIn: .init(capacity: maxSignedIn)))
    }

    func add(_ request: PendingAuthorization, signedIn: Bool, now: Int) -> String {
        let id = SecureToken.generate()
        requests.withLockedValue { tiers in
            if signedIn {
                tiers.signedIn.insert(id, request, expiresAt: request.expiresAt)
            } else {
                tiers.anonymous.insert(id, request, expiresAt: request.expiresAt)
            }
        }
        return id
    }

    /// The request if it exists, has not expired, and belongs to this session.
    func get(_ id: String?, sessionID: String?, now: Int) -> PendingAuthorization? {
        guard let id, let sessionID else { return nil }
        let sessionHash = SecureToken.hash(sessionID)
        return requests.withLockedValue { tiers in
            guard let request = tiers.signedIn.value(id, now: now) ?? tiers.anonymous.value(id, now: now),
                SecureToken.constantTimeEquals(request.sessionHash, sessionHash)
            else { return nil }
            return request
        }
    }

    /// Binds the request to the session its browser signed in with (and so to the signed-in tier).
    func rebind(_ id: String, toSession sessionID: String) {
        let sessionHash = SecureToken.hash(sessionID)
        requests.withLockedValue { tiers in
            if var request = tiers.anonymous.remove(id) {
                request.sessionHash = sessionHash
                tiers.signedIn.insert(id, request, expiresAt: request.expiresAt)
            } else {
                tiers.signedIn.update(id) { $0.sessionHash = sessionHash }
            }
        }
    }

    func remove(_ id: String) {
        requests.withLockedValue { tiers in
            tiers.anonymous.remove(id)
            tiers.signedIn.remove(id)
        }
    }

    func purge(now: Int) {
        requests.withLockedValue { tiers in
            tiers.anonymous.purge(now: now)
            tiers.signedIn.purge(now: now)
        }
    }
}
