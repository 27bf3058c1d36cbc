import Foundation
import GatehouseStore
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

/// Browser sessions: in memory for a single server (a restart signs everyone out; tokens already issued stay
/// valid), or in the shared database (`LoginStateStore`) when replicas share one, so that a browser whose
/// requests land on different replicas stays signed in and its CSRF tokens validate on every one.
///
/// In memory, anonymous sessions (one per browser that opened `/authorize`, made for nothing more than a request)
/// and signed-in ones (each paid for with a password check) are kept apart, each bounded on its own: a flood of
/// anonymous requests drops the oldest anonymous sessions and never a signed-in one. Each tier is a
/// `BoundedExpiringMap`, so an insertion at the cap costs O(1) under the lock, not a scan. In the database the
/// same caps are applied by the periodic purge (`purgeLoginState`), which trims each tier from its oldest end.
final class SessionStore: Sendable {
    private struct Tiers: Sendable {
        var anonymous: BoundedExpiringMap<BrowserSession>
        var signedIn: BoundedExpiringMap<BrowserSession>
    }

    private let tiers: NIOLockedValueBox<Tiers>
    /// Set when replicas share the database: sessions live there, `tiers` stays empty.
    let shared: (any LoginStateStore)?
    private let lifetime: Int
    let maxSignedIn: Int
    let maxAnonymous: Int
    /// Anonymous sessions live only as long as a sign-in may take: the pending request they carry lives 10 min.
    let anonymousLifetime: Int

    /// - Parameters:
    ///   - lifetime: seconds a signed-in session lasts.
    ///   - maxSignedIn: signed-in sessions kept at most; past it the oldest is dropped.
    ///   - maxAnonymous: anonymous sessions kept at most; past it the oldest is dropped.
    ///   - shared: the replicas' shared store, or nil to keep sessions in this process.
    init(lifetime: Int, maxSignedIn: Int = 200_000, maxAnonymous: Int = 50_000, anonymousLifetime: Int = 900, shared: (any LoginStateStore)? = nil) {
        self.lifetime = lifetime
        self.maxSignedIn = maxSignedIn
        self.maxAnonymous = maxAnonymous
        self.anonymousLifetime = min(anonymousLifetime, lifetime)
        self.shared = shared
        self.tiers = NIOLockedValueBox(Tiers(anonymous: .init(capacity: maxAnonymous), signedIn: .init(capacity: maxSignedIn)))
    }

    /// Starts an anonymous session; returns the cookie value and the session.
    func create(now: Int) async throws -> (id: String, session: BrowserSession) {
        let id = SecureToken.generate()
        let session = BrowserSession(csrfToken: SecureToken.generate(), expiresAt: now + anonymousLifetime)
        let key = SecureToken.hash(id)
        if let shared {
            try await shared.insertSession(Self.record(session, idHash: key))
        } else {
            tiers.withLockedValue { $0.anonymous.insert(key, session, expiresAt: session.expiresAt) }
        }
        return (id, session)
    }

    func session(id: String?, now: Int) async throws -> BrowserSession? {
        guard let id, !id.isEmpty else { return nil }
        let key = SecureToken.hash(id)
        if let shared {
            return try await shared.session(idHash: key, now: now).map {
                BrowserSession(csrfToken: $0.csrfToken, userID: $0.userID, username: $0.username, authTime: $0.authTime, expiresAt: $0.expiresAt)
            }
        }
        return tiers.withLockedValue { tiers in
            tiers.signedIn.value(key, now: now) ?? tiers.anonymous.value(key, now: now)
        }
    }

    /// Signs the user in under a new session id (the old id is dropped: no session fixation). Returns the new id
    /// and its session.
    func signIn(replacing oldID: String, userID: String, username: String, now: Int) async throws -> (id: String, session: BrowserSession) {
        let id = SecureToken.generate()
        let session = BrowserSession(csrfToken: SecureToken.generate(), userID: userID, username: username, authTime: now, expiresAt: now + lifetime)
        let oldKey = SecureToken.hash(oldID)
        let key = SecureToken.hash(id)
        if let shared {
            try await shared.replaceSession(oldKey, with: Self.record(session, idHash: key))
            return (id, session)
        }
        tiers.withLockedValue { tiers in
            tiers.anonymous.remove(oldKey)
            tiers.signedIn.remove(oldKey)
            tiers.signedIn.insert(key, session, expiresAt: session.expiresAt)
        }
        return (id, session)
    }

    /// Ends a session, anonymous or signed in; false when there was none.
    @discardableResult
    func signOut(id: String) async throws -> Bool {
        let key = SecureToken.hash(id)
        if let shared { return try await shared.deleteSession(idHash: key) }
        return tiers.withLockedValue { tiers in
            let signedIn = tiers.signedIn.remove(key) != nil
            let anonymous = tiers.anonymous.remove(key) != nil
            return signedIn || anonymous
        }
    }

    /// Sessions held in memory: anonymous and signed in.
    var counts: (anonymous: Int, signedIn: Int) {
        tiers.withLockedValue { ($0.anonymous.count, $0.signedIn.count) }
    }

    /// Drops expired sessions held in memory (the shared store's are purged with `purgeLoginState`).
    func purge(now: Int) {
        tiers.withLockedValue { tiers in
            tiers.anonymous.purge(now: now)
            tiers.signedIn.purge(now: now)
        }
    }

    private static func record(_ session: BrowserSession, idHash: String) -> BrowserSessionRecord {
        BrowserSessionRecord(
            idHash: idHash, csrfToken: session.csrfToken, userID: session.userID, username: session.username, authTime: session.authTime, expiresAt: session.expiresAt
        )
    }
}

/// An authorization request waiting for sign-in or consent, bound to the browser session that started it.
struct PendingAuthorization: Sendable, Equatable, Codable {
    enum ResponseType: String, Sendable, Codable {
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

/// Pending authorization requests by random id (10 minutes to complete sign-in and consent): in memory, or in
/// the shared database (under the id's hash) when replicas share one. In memory, like sessions, the requests of
/// anonymous browsers and those of signed-in ones are bounded apart, so a flood of anonymous `/authorize`
/// requests cannot drop a signed-in user's request on its way to consent.
final class PendingAuthorizations: Sendable {
    private struct Tiers: Sendable {
        var anonymous: BoundedExpiringMap<PendingAuthorization>
        var signedIn: BoundedExpiringMap<PendingAuthorization>
    }

    private let requests: NIOLockedValueBox<Tiers>
    /// Set when replicas share the database: requests live there, `requests` stays empty.
    let shared: (any LoginStateStore)?
    let lifetime = 600

    init(maxAnonymous: Int = 50_000, maxSignedIn: Int = 100_000, shared: (any LoginStateStore)? = nil) {
        self.shared = shared
        self.requests = NIOLockedValueBox(Tiers(anonymous: .init(capacity: maxAnonymous), signedIn: .init(capacity: maxSignedIn)))
    }

    func add(_ request: PendingAuthorization, signedIn: Bool, now: Int) async throws -> String {
        let id = SecureToken.generate()
        if let shared {
            let payload = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
            try await shared.insertPendingAuthorization(
                PendingAuthorizationRecord(idHash: SecureToken.hash(id), sessionHash: request.sessionHash, signedIn: signedIn, expiresAt: request.expiresAt, payload: payload)
            )
            return id
        }
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
    func get(_ id: String?, sessionID: String?, now: Int) async throws -> PendingAuthorization? {
        guard let id, let sessionID else { return nil }
        let sessionHash = SecureToken.hash(sessionID)
        let found: PendingAuthorization?
        if let shared {
            found = try await shared.pendingAuthorization(idHash: SecureToken.hash(id), now: now).flatMap { record in
                guard var request = try? JSONDecoder().decode(PendingAuthorization.self, from: Data(record.payload.utf8)) else { return nil }
                request.sessionHash = record.sessionHash  // rebinding changes the column, not the payload
                return request
            }
        } else {
            found = requests.withLockedValue { tiers in tiers.signedIn.value(id, now: now) ?? tiers.anonymous.value(id, now: now) }
        }
        guard let found, SecureToken.constantTimeEquals(found.sessionHash, sessionHash) else { return nil }
        return found
    }

    /// Binds the request to the session its browser signed in with (and so to the signed-in tier).
    func rebind(_ id: String, toSession sessionID: String) async throws {
        let sessionHash = SecureToken.hash(sessionID)
        if let shared {
            try await shared.rebindPendingAuthorization(idHash: SecureToken.hash(id), toSessionHash: sessionHash)
            return
        }
        requests.withLockedValue { tiers in
            if var request = tiers.anonymous.remove(id) {
                request.sessionHash = sessionHash
                tiers.signedIn.insert(id, request, expiresAt: request.expiresAt)
            } else {
                tiers.signedIn.update(id) { $0.sessionHash = sessionHash }
            }
        }
    }

    /// Removes the request; true for exactly one caller (on any replica), the one that may complete it.
    @discardableResult
    func take(_ id: String) async throws -> Bool {
        if let shared { return try await shared.takePendingAuthorization(idHash: SecureToken.hash(id)) }
        return requests.withLockedValue { tiers in
            let anonymous = tiers.anonymous.remove(id) != nil
            let signedIn = tiers.signedIn.remove(id) != nil
            return anonymous || signedIn
        }
    }

    /// Drops expired requests held in memory (the shared store's are purged with `purgeLoginState`).
    func purge(now: Int) {
        requests.withLockedValue { tiers in
            tiers.anonymous.purge(now: now)
            tiers.signedIn.purge(now: now)
        }
    }
}
