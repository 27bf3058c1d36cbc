import NIOConcurrencyHelpers
import NIOCore

/// Who may use the SQLite writer connection now. SQLite has no per-caller transactions on one connection: a
/// statement issued while another caller's `BEGIN … COMMIT` is open joins that transaction (and is rolled back
/// with it, or acknowledged before it commits). So single statements share the writer (as before: they run
/// concurrently on the thread pool and SQLite serializes them), and a multi-statement transaction has it alone.
///
/// FIFO between the two modes: once a transaction waits, later statements queue behind it, so a steady stream of
/// statements cannot starve it. Uncontended, a statement costs two short lock rounds (in and out) and no
/// allocation; only a waiter allocates (its promise or continuation). Transactions are rare (a code redemption, a
/// refresh rotation), so the token inserts of group commit — one batch in flight — almost never wait. Shown needed by
/// `AuthStoreTests.insertsAcknowledgedWhileTransactionsRollBackAreAllKept`: without the gate, inserts acknowledged
/// while failing redemptions ran were lost on every run.
final class WriterGate: Sendable {
    private enum Mode {
        case shared
        case exclusive
    }

    private enum Waiter {
        case continuation(CheckedContinuation<Void, Never>)
        case promise(EventLoopPromise<Void>)

        func resume() {
            switch self {
            case .continuation(let continuation): continuation.resume()
            case .promise(let promise): promise.succeed()
            }
        }
    }

    private struct State {
        var sharedHolders = 0
        var exclusiveHeld = false
        var queue: [(mode: Mode, waiter: Waiter)] = []

        /// Takes the gate now if nothing it must respect is ahead (a holder of the other kind, or anyone queued).
        mutating func tryEnter(_ mode: Mode) -> Bool {
            guard queue.isEmpty, !exclusiveHeld else { return false }
            switch mode {
            case .shared:
                sharedHolders += 1
                return true
            case .exclusive:
                guard sharedHolders == 0 else { return false }
                exclusiveHeld = true
                return true
            }
        }

        /// After a holder left: the waiters at the head of the queue that may enter now (one transaction, or every
        /// statement up to the next transaction).
        mutating func admit() -> [Waiter] {
            var admitted: [Waiter] = []
            while let head = queue.first, !exclusiveHeld {
                if head.mode == .exclusive {
                    guard sharedHolders == 0 else { break }
                    exclusiveHeld = true
                } else {
                    sharedHolders += 1
                }
                admitted.append(queue.removeFirst().waiter)
            }
            return admitted
        }
    }

    private let state = NIOLockedValueBox(State())

    /// Runs one statement's worth of work alongside other statements, never inside a transaction.
    func shared<T>(_ body: () async throws -> T) async throws -> T {
        await enter(.shared)
        defer { leave(.shared) }
        return try await body()
    }

    /// `shared` for future-based work (the group-commit batcher's writes).
    func shared<T: Sendable>(on eventLoop: any EventLoop, _ body: @escaping @Sendable () -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        let entered: EventLoopFuture<Void>? = state.withLockedValue { state in
            if state.tryEnter(.shared) { return nil }
            let promise = eventLoop.makePromise(of: Void.self)
            state.queue.append((.shared, .promise(promise)))
            return promise.futureResult
        }
        let work = entered.map { $0.flatMap { _ in body() } } ?? body()
        return work.always { _ in self.leave(.shared) }
    }

    /// Runs a transaction with the writer to itself: every statement issued through the gate waits until it ends.
    func exclusive<T>(_ body: () async throws -> T) async throws -> T {
        await enter(.exclusive)
        defer { leave(.exclusive) }
        return try await body()
    }

    private func enter(_ mode: Mode) async {
        if state.withLockedValue({ $0.tryEnter(mode) }) { return }
        await withCheckedContinuation { continuation in
            let now = state.withLockedValue { state -> Bool in
                if state.tryEnter(mode) { return true }
                state.queue.append((mode, .continuation(continuation)))
                return false
            }
            if now { continuation.resume() }
        }
    }

    private func leave(_ mode: Mode) {
        let admitted = state.withLockedValue { state -> [Waiter] in
            switch mode {
            case .shared: state.sharedHolders -= 1
            case .exclusive: state.exclusiveHeld = false
            }
            return state.admit()
        }
        for waiter in admitted { waiter.resume() }
    }
}
