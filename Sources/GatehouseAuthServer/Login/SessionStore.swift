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
final class SessionStore: Sendable {
    private let sessions = NIOLockedValueBox([String: BrowserSession]())
    private let lifetime: Int
    private let maxSessions: Int

    init(lifetime: Int, maxSessions: Int = 200_000) {
        self.lifetime = lifetime
        self.maxSessions = maxSessions
    }

    /// Starts an anonymous session; returns the cookie value and the session.
    func create(now: Int) -> (id: String, session: BrowserSession) {
        let id = SecureToken.generate()
        let session = BrowserSession(csrfToken: SecureToken.generate(), expiresAt: now + lifetime)
        sessions.withLockedValue { sessions in
            if sessions.count >= maxSessions { sessions = sessions.filter { $0.value.expiresAt > now } }
            if sessions.count >= maxSessions, let victim = sessions.min(by: { $0.value.expiresAt < $1.value.expiresAt })?.key {
                sessions[victim] = nil
            }
            sessions[SecureToken.hash(id)] = session
        }
        return (id, session)
    }

    func session(id: String?, now: Int) -> BrowserSession? {
        guard let id, !id.isEmpty else { return nil }
        let key = SecureToken.hash(id)
        return sessions.withLockedValue { sessions in
            guard let session = sessions[key] else { return nil }
            guard session.expiresAt > now else {
                sessions[key] = nil
                return nil
            }
            return session
        }
    }

    /// Signs the user in under a new session id (the old id is dropped: no session fixation).
    func signIn(replacing oldID: String, userID: String, username: String, now: Int) -> String {
        let id = SecureToken.generate()
        let session = BrowserSession(csrfToken: SecureToken.generate(), userID: userID, username: username, authTime: now, expiresAt: now + lifetime)
        sessions.withLockedValue { sessions in
            sessions[SecureToken.hash(oldID)] = nil
            sessions[SecureToken.hash(id)] = session
        }
        return id
    }

    func purge(now: Int) {
        sessions.withLockedValue { sessions in sessions = sessions.filter { $0.value.expiresAt > now } }
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
}

/// Pending authorization requests by random id (10 minutes to complete sign-in and consent).
final class PendingAuthorizations: Sendable {
    private let requests = NIOLockedValueBox([String: PendingAuthorization]())
    let lifetime = 600

    func add(_ request: PendingAuthorization, now: Int) -> String {
        let id = SecureToken.generate()
        requests.withLockedValue { requests in
            if requests.count > 100_000 { requests = requests.filter { $0.value.expiresAt > now } }
            if requests.count > 100_000, let victim = requests.min(by: { $0.value.expiresAt < $1.value.expiresAt })?.key {
                requests[victim] = nil
            }
            requests[id] = request
        }
        return id
    }

    /// The request if it exists, has not expired, and belongs to this session.
    func get(_ id: String?, sessionID: String?, now: Int) -> PendingAuthorization? {
        guard let id, let sessionID else { return nil }
        let sessionHash = SecureToken.hash(sessionID)
        return requests.withLockedValue { requests in
            guard let request = requests[id], request.expiresAt > now, SecureToken.constantTimeEquals(request.sessionHash, sessionHash) else { return nil }
            return request
        }
    }

    func rebind(_ id: String, toSession sessionID: String) {
        requests.withLockedValue { requests in requests[id]?.sessionHash = SecureToken.hash(sessionID) }
    }

    func remove(_ id: String) {
        _ = requests.withLockedValue { $0.removeValue(forKey: id) }
    }

    func purge(now: Int) {
        requests.withLockedValue { requests in requests = requests.filter { $0.value.expiresAt > now } }
    }
}
