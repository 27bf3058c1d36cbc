import HummingbirdBcrypt
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A password hashing algorithm. bcrypt in production; tests inject one that counts or blocks. Its functions are
/// only ever called on the password-hashing pool.
public protocol PasswordAlgorithm: Sendable {
    /// A new hash of `password` at `cost`.
    func hash(_ password: String, cost: Int) -> String
    /// Whether `password` matches `hash`.
    func verify(_ password: String, hash: String) -> Bool
}

/// bcrypt (HummingbirdBcrypt's C implementation).
public struct BcryptAlgorithm: PasswordAlgorithm {
    public init() {}

    public func hash(_ password: String, cost: Int) -> String {
        Bcrypt.hash(password, cost: UInt8(clamping: cost))
    }

    public func verify(_ password: String, hash: String) -> Bool {
        Bcrypt.verify(password, hash: hash)
    }
}

/// Password hashing on a pool of its own with a bounded queue.
///
/// Why a pool of its own: bcrypt at cost 10 holds a thread for tens of milliseconds, and SQLite runs on
/// `NIOThreadPool.singleton` (2 threads on a 2-core machine). On that shared pool a burst of sign-ins queued every
/// token lookup and insert behind it, so token issuance stalled for as long as the burst lasted. Here hashing can
/// only delay hashing. Why a bounded queue: a queued hash is a client waiting; past `threads + maxQueued` jobs a
/// new one is refused at once (`Busy`, with an estimate of when to come back) rather than made to wait longer.
final class PasswordHasher: Sendable {
    /// Refused because every thread is busy and the queue is full.
    struct Busy: Error, Equatable {
        /// Seconds after which a retry is likely to be admitted.
        let retryAfter: Int
    }

    let cost: Int
    let threads: Int
    let maxQueued: Int
    private let algorithm: any PasswordAlgorithm
    /// Never `NIOThreadPool.singleton`, where SQLite runs.
    let pool: NIOThreadPool
    private let state = NIOLockedValueBox(State())

    private struct State {
        /// Jobs admitted and not finished (running or queued).
        var inFlight = 0
        /// Moving average of one job's duration, for `Busy.retryAfter`.
        var averageNanoseconds: Int64 = 0
        /// The decoy hash, made once at `cost` (see `decoyHash()`).
        var decoy: String?
    }

    /// The password a decoy hash is made from; no user can sign in with it because it is never stored for a user.
    static let decoyPassword = "gatehouse decoy password"

    /// - Parameters:
    ///   - cost: bcrypt cost of new hashes and of the decoy.
    ///   - threads: threads of the hashing pool (one pool per distinct size, kept for the process's life).
    ///   - maxQueued: jobs that may wait for a thread before new ones are refused.
    ///   - pool: a pool of `threads` threads to use instead of the shared one (tests that block it).
    init(cost: Int, threads: Int = 1, maxQueued: Int = 32, algorithm: any PasswordAlgorithm = BcryptAlgorithm(), pool: NIOThreadPool? = nil) {
        self.cost = cost
        self.threads = max(1, threads)
        self.maxQueued = max(0, maxQueued)
        self.algorithm = algorithm
        self.pool = pool ?? PasswordHashingPools.shared(threads: self.threads)
    }

    /// Jobs admitted and not finished.
    var inFlight: Int { state.withLockedValue { $0.inFlight } }

    func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await run { $0.hash(password, cost: cost) }
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        try await run { $0.verify(password, hash: hash) }
    }

    /// Verifies against the decoy hash: what an unknown username costs, so that timing does not reveal which
    /// usernames exist. Always false.
    func verifyDecoy(_ password: String) async throws -> Bool {
        let decoy = try await decoyHash()
        _ = try await verify(password, hash: decoy)
        return false
    }

    /// A hash that matches no user's password, at the configured cost: a decoy at another cost than the users'
    /// hashes would take measurably less (or more) time — each cost step doubles bcrypt's work — and so tell
    /// registered usernames from unknown ones. Made on the hashing pool the first time it is needed (the server
    /// asks for it at start-up, so no request pays for it).
    func decoyHash() async throws -> String {
        if let decoy = state.withLockedValue({ $0.decoy }) { return decoy }
        let made = try await hash(Self.decoyPassword)
        return state.withLockedValue { state in
            if let decoy = state.decoy { return decoy }
            state.decoy = made
            return made
        }
    }

    private func run<Result: Sendable>(_ work: @escaping @Sendable (any PasswordAlgorithm) -> Result) async throws -> Result {
        let capacity = threads + maxQueued
        let threads = self.threads
        let refusal = state.withLockedValue { state -> Busy? in
            guard state.inFlight < capacity else {
                // The queue drains at `threads` jobs per average duration.
                let queuedNanoseconds = state.averageNanoseconds * Int64(state.inFlight) / Int64(threads)
                let seconds = Int((queuedNanoseconds + 999_999_999) / 1_000_000_000)
                return Busy(retryAfter: min(60, max(1, seconds)))
            }
            state.inFlight += 1
            return nil
        }
        if let refusal { throw refusal }
        defer { state.withLockedValue { $0.inFlight -= 1 } }
        let algorithm = self.algorithm
        let state = self.state
        return try await pool.runIfActive {
            let start = NIODeadline.now()
            let result = work(algorithm)
            let elapsed = (NIODeadline.now() - start).nanoseconds
            state.withLockedValue { state in
                state.averageNanoseconds = state.averageNanoseconds == 0 ? elapsed : (state.averageNanoseconds * 7 + elapsed) / 8
            }
            return result
        }
    }
}

/// The password-hashing thread pools: one per distinct size, started on first use and kept for the life of the
/// process (like `NIOThreadPool.singleton`), so a server never has to shut one down and tests that start many
/// servers do not start many pools.
enum PasswordHashingPools {
    private static let pools = NIOLockedValueBox([Int: NIOThreadPool]())

    static func shared(threads: Int) -> NIOThreadPool {
        pools.withLockedValue { pools in
            if let pool = pools[threads] { return pool }
            let pool = NIOThreadPool(numberOfThreads: threads)
            pool.start()
            pools[threads] = pool
            return pool
        }
    }
}
