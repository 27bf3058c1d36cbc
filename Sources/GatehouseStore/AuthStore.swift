import GatehouseTokens

/// Persistent state of the authorization server. Implementations must make every acknowledged write durable
/// before they return (a token handed out is never lost on a crash).
public protocol AuthStore: Sendable {
    // Clients
    func upsertClient(_ client: ClientRecord) async throws
    func client(id: String) async throws -> ClientRecord?
    func listClients() async throws -> [ClientRecord]
    /// Removes a client and revokes its tokens. Returns whether it existed.
    @discardableResult func removeClient(id: String) async throws -> Bool
    /// Removes clients that came from configuration but are no longer in it.
    func removeConfigurationClients(notIn ids: Set<String>) async throws

    // Users
    func upsertUser(_ user: UserRecord) async throws
    func user(username: String) async throws -> UserRecord?
    func user(id: String) async throws -> UserRecord?
    /// Removes a user and revokes their tokens. Returns whether they existed.
    @discardableResult func removeUser(username: String) async throws -> Bool

    // Authorization codes
    func insertCode(_ code: AuthorizationCodeRecord) async throws
    /// The code with this hash, used or not, without changing it (the binding is checked before a use counts).
    func code(hash: String) async throws -> AuthorizationCodeRecord?
    /// Marks a code used and, when this call did it, stores `tokens` (what the redemption issues) in the same
    /// transaction; tells whether this call redeemed it or it had been used before. All or nothing: a failure
    /// (the database going away mid-way) leaves the code unused and no token stored, so the client's retry is a
    /// first use, not a replay. And no one sees the code used before its tokens are stored, which is what makes
    /// `recordCodeReplay` reach them in every interleaving.
    func redeemCode(hash: String, at now: Int, issuing tokens: [TokenRecord]) async throws -> CodeRedemption
    /// Records that a used code was presented again and revokes its token family. The caller saw the code used, so
    /// the tokens its redemption issued are committed (`redeemCode`) and the revocation, a later statement, reaches
    /// them: "a replay revokes what the code issued" whatever the interleaving, on one server or across replicas.
    func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws

    // Tokens
    /// Reserves ids for new tokens (increasing; never handed out twice by this store, nor by another replica
    /// sharing its database). Async because a replicated store takes blocks of ids from a database sequence.
    func allocateTokenIDs(_ count: Int) async throws -> [Int64]
    /// Stores tokens; returns once they are durable. Concurrent calls are committed together.
    func insertTokens(_ tokens: [TokenRecord]) async throws
    /// The token a locator names, if its hash matches (compared in constant time).
    func token(_ locator: TokenLocator) async throws -> TokenRecord?
    /// Atomically marks a refresh token rotated at `now` unless it was rotated or revoked before.
    func markRotated(_ locator: TokenLocator, at now: Int) async throws -> RotationMark
    /// `markRotated`, and when this call rotated the token, stores its `successors` in the same transaction: a
    /// failure (the database going away between the two) leaves the token unrotated, so the client's retry with it
    /// is a first use, not a reuse that would revoke its family.
    func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark
    /// Revokes every token of a family.
    func revokeFamily(_ familyID: String) async throws
    /// Revokes one token. Returns whether it existed.
    @discardableResult func revokeToken(_ locator: TokenLocator) async throws -> Bool

    // Self-contained JWTs (client_credentials JWTs, which have no row: see `JWTAccessToken`)
    /// Records that the self-contained JWT `jti` (issued to `clientID`, valid until `expiresAt`) is revoked; durable
    /// on return. Idempotent: revoking it again changes nothing.
    func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws
    /// Whether `revokeJWT` recorded this `jti` (and the purge has not removed it since its expiry plus
    /// `jwtRevocationRetention`).
    func isJWTRevoked(jti: String) async throws -> Bool
    /// How many rows the token tables hold.
    func tokenCounts() async throws -> StoredTokenCounts

    // Consent
    func consentedScopes(userID: String, clientID: String) async throws -> Set<String>
    func saveConsent(userID: String, clientID: String, scopes: Set<String>, at now: Int) async throws

    /// Deletes expired codes, tokens and JWT revocations; returns how many rows went.
    @discardableResult func purgeExpired(now: Int) async throws -> Int

    /// Answers once the database can be queried; throws a `StoreError` (`.unavailable` when it cannot be
    /// reached) otherwise. For readiness checks.
    func ping() async throws

    /// Closes connections. No call may follow.
    func close() async throws
}

/// A storage failure that is not the caller's fault.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case openFailed
        case migrationFailed
        case queryFailed
        case corruptRow
        /// The database cannot be reached or did not answer in time (a server restart, a network fault). The
        /// request may be retried later: the authorization server answers 503 with `Retry-After`.
        case unavailable
    }

    public let code: Code
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// Errors are equal when their codes are (the message is for people).
    public static func == (lhs: StoreError, rhs: StoreError) -> Bool { lhs.code == rhs.code }
}

extension StoreError: Equatable {}

/// Seconds a `jwt_revocations` row outlives its token's `exp` before the purge deletes it. Deleting the row turns
/// "revoked" into "active", and replicas judge `exp` by their own clocks (assumed within 5 s of each other): purged at
/// `exp` by one replica's clock, the token would read active at a replica whose clock is behind, until its own `exp`.
public let jwtRevocationRetention = 60
