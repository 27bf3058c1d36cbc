import GatehouseStore
import NIOConcurrencyHelpers
import PostgresNIO

/// Maps what postgres-nio throws to a `StoreError`. Transport failures, a server shutting down or starting up,
/// a statement timeout and a pool that cannot connect are `.unavailable` (the caller answers 503 and retries
/// later); everything else the server refuses is `.queryFailed`. Messages carry SQLSTATE and the server's
/// message, never the connection's password (postgres-nio's own error descriptions are deliberately generic).
enum PostgresErrors {
    /// SQLSTATEs that mean "not now" rather than "not this": connection exceptions (class 08), the server
    /// shutting down or starting (57P01–57P03), too many connections (53300), a statement timeout or cancel
    /// (57014), a lock wait past `lock_timeout` (55P03), serialization failures and deadlocks (40001, 40P01).
    static func isTransient(_ sqlState: String) -> Bool {
        sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300", "57014", "55P03", "40001", "40P01"].contains(sqlState)
    }

    static func storeError(_ error: any Error, doing operation: String) -> StoreError {
        switch error {
        case let error as StoreError:
            return error
        case let error as PostgresTransactionError:
            if let inner = error.closureError ?? error.commitError ?? error.beginError {
                return storeError(inner, doing: operation)
            }
            return StoreError(code: .queryFailed, message: "\(operation): transaction failed")
        case let error as PSQLError:
            if error.code == .server {
                let state = error.serverInfo?[.sqlState] ?? "?"
                let message = error.serverInfo?[.message] ?? ""
                return StoreError(code: isTransient(state) ? .unavailable : .queryFailed, message: "\(operation): SQLSTATE \(state): \(message)")
            }
            let underlying = error.underlying.map { " (\($0))" } ?? ""
            switch error.code {
            case .connectionError, .serverClosedConnection, .uncleanShutdown, .clientClosedConnection, .poolClosed, .queryCancelled:
                return StoreError(code: .unavailable, message: "\(operation): PostgreSQL unreachable: \(error.code)\(underlying)")
            default:
                return StoreError(code: .queryFailed, message: "\(operation): \(error.code)\(underlying)")
            }
        case let error as PostgresDecodingError:
            return StoreError(code: .corruptRow, message: "\(operation): column \(error.columnName): \(error.code)")
        default:
            // The pool's own errors (circuit breaker tripped while the server is down, a cancelled lease when our
            // deadline passed) and anything else from the transport.
            return StoreError(code: .unavailable, message: "\(operation): PostgreSQL unreachable: \(error)")
        }
    }
}

/// Runs a store operation under a deadline. postgres-nio's pool queues a lease for as long as it takes to
/// connect (it retries with backoff while the server is down), and a query on a connection whose peer vanished
/// without a reset waits for TCP to notice; neither is bounded by `statement_timeout`. The caller is resumed by
/// whichever comes first, the operation or the deadline: on the deadline it gets `.unavailable` at once and the
/// operation is cancelled (a queued lease is withdrawn; a query in flight ends with its connection). The caller
/// never waits for a cancelled operation to wind down, so a call is bounded even if one does not.
/// Cost: two short-lived tasks per call, a few microseconds beside a database round trip.
enum Deadline {
    /// Resumes a continuation once, whichever side gets there first.
    private final class Race<T: Sendable>: Sendable {
        private let state = NIOLockedValueBox<(continuation: CheckedContinuation<T, any Error>?, finished: Bool)>((nil, false))

        func start(_ continuation: CheckedContinuation<T, any Error>) {
            state.withLockedValue { $0.continuation = continuation }
        }

        /// Returns whether this call resumed the caller.
        @discardableResult
        func finish(_ result: Result<T, any Error>) -> Bool {
            let continuation = state.withLockedValue { state -> CheckedContinuation<T, any Error>? in
                guard !state.finished else { return nil }
                state.finished = true
                defer { state.continuation = nil }
                return state.continuation
            }
            continuation?.resume(with: result)
            return continuation != nil
        }
    }

    static func run<T: Sendable>(_ limit: Duration, operation name: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let race = Race<T>()
        return try await withCheckedThrowingContinuation { continuation in
            race.start(continuation)
            let work = Task {
                do {
                    race.finish(.success(try await body()))
                } catch {
                    race.finish(.failure(error))
                }
            }
            Task {
                try? await Task.sleep(for: limit)
                if race.finish(.failure(StoreError(code: .unavailable, message: "\(name): no answer from PostgreSQL within \(limit)"))) {
                    work.cancel()
                }
            }
        }
    }
}

/// Token ids for one store instance, taken from the `token_ids` sequence in blocks of
/// `PostgresSchema.tokenIDBlockSize`: each `nextval` reserves a block no other replica gets, so ids never collide
/// across replicas and only one allocation in 1024 costs a round trip. Ids of a block not used before the
/// process exits are skipped (a gap, never a reuse). Concurrent callers that find the block empty share one fetch.
final class TokenIDBlocks: Sendable {
    private struct State {
        var next: Int64 = 1
        var end: Int64 = 0  // exclusive; next == end: empty
        var refill: Task<Void, any Error>?
    }

    private let state = NIOLockedValueBox(State())
    private let fetchBlock: @Sendable () async throws -> Int64

    /// - Parameter fetchBlock: returns the first id of a fresh block.
    init(fetchBlock: @escaping @Sendable () async throws -> Int64) {
        self.fetchBlock = fetchBlock
    }

    /// Ids from the current block without waiting, or nil when it has too few left.
    func allocateFromBlock(_ count: Int) -> [Int64]? {
        state.withLockedValue { state in
            guard state.end - state.next >= Int64(count) else { return nil }
            let first = state.next
            state.next += Int64(count)
            return Array(first..<state.next)
        }
    }

    func allocate(_ count: Int) async throws -> [Int64] {
        precondition(count > 0 && Int64(count) <= PostgresSchema.tokenIDBlockSize)
        while true {
            let (ids, refill) = state.withLockedValue { state -> ([Int64]?, Task<Void, any Error>?) in
                if state.end - state.next >= Int64(count) {
                    let first = state.next
                    state.next += Int64(count)
                    return (Array(first..<state.next), nil)
                }
                if let refill = state.refill { return (nil, refill) }
                let fetch = fetchBlock
                let task = Task<Void, any Error> { [weak self] in
                    let start: Int64
                    do {
                        start = try await fetch()
                    } catch {
                        self?.state.withLockedValue { $0.refill = nil }
                        throw error
                    }
                    self?.state.withLockedValue { state in
                        state.next = start
                        state.end = start + PostgresSchema.tokenIDBlockSize
                        state.refill = nil
                    }
                }
                state.refill = task
                return (nil, task)
            }
            if let ids { return ids }
            try await refill!.value
        }
    }
}
