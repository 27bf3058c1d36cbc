/// A browser's sign-in session as a shared store keeps it: under the SHA-256 of the cookie's random id (the id
/// itself is never stored), with the CSRF token its forms carry, so any replica can check them.
public struct BrowserSessionRecord: Sendable, Equatable {
    public var idHash: String
    public var csrfToken: String
    public var userID: String?
    public var username: String?
    public var authTime: Int?
    public var expiresAt: Int

    public init(idHash: String, csrfToken: String, userID: String? = nil, username: String? = nil, authTime: Int? = nil, expiresAt: Int) {
        self.idHash = idHash
        self.csrfToken = csrfToken
        self.userID = userID
        self.username = username
        self.authTime = authTime
        self.expiresAt = expiresAt
    }

    /// Signed in (a password was checked), as opposed to anonymous (made for an `/authorize` request).
    public var isSignedIn: Bool { userID != nil }
}

/// An authorization request waiting for sign-in or consent, under the SHA-256 of its random id and bound to the
/// hash of the session that started it.
public struct PendingAuthorizationRecord: Sendable, Equatable {
    public var idHash: String
    public var sessionHash: String
    /// Whether its session is signed in (the tier it is bounded in).
    public var signedIn: Bool
    public var expiresAt: Int
    /// The request's parameters, written and read by the authorization server (JSON).
    public var payload: String

    public init(idHash: String, sessionHash: String, signedIn: Bool, expiresAt: Int, payload: String) {
        self.idHash = idHash
        self.sessionHash = sessionHash
        self.signedIn = signedIn
        self.expiresAt = expiresAt
        self.payload = payload
    }
}

/// One login-throttle key's counters (see `LoginThrottle` in the authorization server) as a shared store keeps
/// them: under the SHA-256 of the key, so no username or address is stored in clear. (Unsalted, so not secret from
/// whoever reads the table: an IPv4 address or a common username is found by hashing candidates.)
public struct LoginThrottleRecord: Sendable, Equatable {
    /// Failed attempts within the window that ends `failureWindow` after `lastFailure`.
    public var failures: Int
    public var lastFailure: Int
    /// Attempts counted before their password was evaluated, not settled yet.
    public var pending: Int
    public var lastReserved: Int

    public init(failures: Int, lastFailure: Int, pending: Int = 0, lastReserved: Int = 0) {
        self.failures = failures
        self.lastFailure = lastFailure
        self.pending = pending
        self.lastReserved = lastReserved
    }
}

/// Browser sign-in state kept in the database that replicas share, so that a browser whose requests land on
/// different replicas stays signed in and its pending request, CSRF tokens and consent hold everywhere.
/// Implemented by stores meant to be shared (PostgreSQL); a single server keeps this state in memory.
public protocol LoginStateStore: Sendable {
    func insertSession(_ session: BrowserSessionRecord) async throws
    /// The session with this id hash unless it expired.
    func session(idHash: String, now: Int) async throws -> BrowserSessionRecord?
    /// Deletes the session `oldIDHash` and inserts `session` in one transaction (a sign-in under a new id).
    func replaceSession(_ oldIDHash: String, with session: BrowserSessionRecord) async throws
    /// Deletes a session; false when there was none.
    @discardableResult func deleteSession(idHash: String) async throws -> Bool

    func insertPendingAuthorization(_ request: PendingAuthorizationRecord) async throws
    /// The pending request with this id hash unless it expired.
    func pendingAuthorization(idHash: String, now: Int) async throws -> PendingAuthorizationRecord?
    /// Binds a pending request to the session its browser signed in with (and so to the signed-in tier).
    func rebindPendingAuthorization(idHash: String, toSessionHash sessionHash: String) async throws
    /// Deletes a pending request; true for exactly one caller however many replicas race (the one that completes it).
    func takePendingAuthorization(idHash: String) async throws -> Bool

    /// Deletes expired sessions and pending requests in batches, then the oldest anonymous sessions beyond
    /// `maxAnonymousSessions` and the oldest signed-in ones beyond `maxSignedInSessions`. Returns how many rows went.
    @discardableResult func purgeLoginState(now: Int, maxAnonymousSessions: Int, maxSignedInSessions: Int) async throws -> Int
}

/// The login throttle's counters kept in the database that replicas share, so that failed guesses are counted over
/// all replicas together (N replicas with counters of their own would give N times the guessing budget).
/// Implemented by stores meant to be shared (PostgreSQL); a single server keeps the counters in memory.
public protocol LoginThrottleStore: Sendable {
    /// The login throttle's read-modify-write, atomic across replicas: locks the rows of `keyHashes` for one
    /// transaction, passes them to `transition` (a key without a row is absent from the dictionary), and stores
    /// what it returns as the keys' new state (a key it leaves out is deleted). Of two replicas updating one key at
    /// once, the second waits and decides on the first's result. Returns the transition's answer.
    func updateLoginThrottle<T: Sendable>(
        keyHashes: [String], _ transition: @escaping @Sendable ([String: LoginThrottleRecord]) -> (answer: T, entries: [String: LoginThrottleRecord])
    ) async throws -> T
    /// Deletes throttle rows untouched (no failure, no reservation) since `cutoff`, in batches; returns how many went.
    @discardableResult func purgeLoginThrottle(idleBefore cutoff: Int) async throws -> Int
}
