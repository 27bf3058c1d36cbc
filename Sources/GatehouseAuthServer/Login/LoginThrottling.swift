import GatehouseStore
import GatehouseTokens
import NIOConcurrencyHelpers

/// Where the login throttle's counters live, behind the same steps: in this process (one server; SQLite), or in
/// the database replicas share (PostgreSQL), so that failed guesses at every replica count together — with
/// counters per replica, N replicas would give N times the guessing budget. Either way the decision is
/// `LoginThrottle`'s: the shared store locks the keys' rows for one transaction and the same state machine decides
/// on them.
struct LoginThrottling: Sendable {
    private enum Backend: Sendable {
        case local(NIOLockedValueBox<LoginThrottle>)
        case shared(any LoginThrottleStore)
    }

    /// What became of an attempt `reserve` counted.
    enum Outcome: Sendable {
        /// The password was wrong (or the user unknown): the attempt stays counted as a failure.
        case failed
        /// Never evaluated (the hashing queue was full), or evaluated for another key's sake: taken back.
        case notFailed
        /// The password was right: the key's record is cleared.
        case succeeded
    }

    let policy: LoginThrottle.Policy
    private let backend: Backend

    /// Counters in this process.
    init(policy: LoginThrottle.Policy) {
        self.policy = policy
        self.backend = .local(NIOLockedValueBox(LoginThrottle(policy: policy)))
    }

    /// Counters in a shared store, under the SHA-256 of each key (a username or an address never reaches it).
    init(policy: LoginThrottle.Policy, shared store: any LoginThrottleStore) {
        self.policy = policy
        self.backend = .shared(store)
    }

    /// `LoginThrottle.reserve`: counts an attempt for every key, or returns the wait (counting nothing). Throws
    /// the shared store's error when it cannot be reached: the caller must then refuse the attempt.
    func reserve(_ keys: [String], now: Int) async throws -> Int? {
        try await apply(keys) { throttle, keys in throttle.reserve(keys, now: now) }
    }

    /// Settles the attempts `reserve` counted, one outcome per key (in the order of `keys`).
    func settle(_ keys: [String], _ outcomes: [Outcome], now: Int) async throws {
        precondition(keys.count == outcomes.count)
        try await apply(keys) { throttle, keys in
            for (key, outcome) in zip(keys, outcomes) {
                switch outcome {
                case .failed: throttle.settle(key, failed: true, now: now)
                case .notFailed: throttle.settle(key, failed: false, now: now)
                case .succeeded: throttle.recordSuccess(key)
                }
            }
        }
    }

    /// Runs one step of the state machine on the keys' entries: under this process's lock, or in one transaction
    /// of the shared store (on the hashed keys).
    private func apply<T: Sendable>(_ keys: [String], _ step: @escaping @Sendable (inout LoginThrottle, [String]) -> T) async throws -> T {
        switch backend {
        case .local(let throttle):
            return throttle.withLockedValue { step(&$0, keys) }
        case .shared(let store):
            let hashes = keys.map { SecureToken.hash($0) }
            let policy = self.policy
            return try await store.updateLoginThrottle(keyHashes: hashes) { rows in
                var throttle = LoginThrottle(policy: policy, entries: rows)
                let answer = step(&throttle, hashes)
                return (answer, throttle.entries)
            }
        }
    }
}
