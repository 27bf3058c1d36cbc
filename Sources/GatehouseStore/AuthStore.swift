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
    /// Atomically marks a code used; tells whether this call did it or it had been used before.
    func redeemCode(hash: String, at now: Int) async throws -> CodeRedemption
    /// Records that a used code was presented again and revokes its token family. The record outlives the
    /// revocation so that tokens the winning redemption stores afterwards can still be revoked
    /// (`codeWasReplayed`): the rule "a replay revokes what the code issued" holds whatever the interleaving.
    func recordCodeReplay(hash: String, familyID: String, at now: Int) async throws
    /// Whether `recordCodeReplay` ran for this code. Read on the connection that writes, after the caller's own
    /// writes, so that it sees every replay recorded before it.
    func codeWasReplayed(hash: String) async throws -> Bool

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
    /// is a first use, not a reuse that would revoke its family. The default runs the two steps one after the other.
    func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark
    /// Revokes every token of a family.
    func revokeFamily(_ familyID: String) async throws
    /// Revokes one token. Returns whether it existed.
    @discardableResult func revokeToken(_ locator: TokenLocator) async throws -> Bool

    // Self-contained JWTs (client_credentials JWTs, which have no row: see `JWTAccessToken`)
    /// Records that the self-contained JWT `jti` (issued to `clientID`, valid until `expiresAt`) is revoked; durable
    /// on return. Idempotent: revoking it again changes nothing.
    func revokeJWT(jti: String, clientID: String, expiresAt: Int) async throws
    /// Whether `revokeJWT` recorded this `jti` (and the purge has not removed it since its expiry).
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

extension AuthStore {
    public func rotate(_ locator: TokenLocator, at now: Int, successors: [TokenRecord]) async throws -> RotationMark {
        let mark = try await markRotated(locator, at: now)
        if case .rotatedNow = mark { try await insertTokens(successors) }
        return mark
    }
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
