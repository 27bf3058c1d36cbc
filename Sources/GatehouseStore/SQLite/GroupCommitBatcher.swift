import NIOConcurrencyHelpers
import NIOCore

/// Collects rows submitted concurrently and writes them in batches, one write in flight at a time.
/// The first submitter to find no write in flight starts one with everything pending; rows arriving meanwhile
/// form the next batch. Every submitter is resumed only after the write holding its rows has completed, so an
/// acknowledgement always means "durable". No background task is needed: the write chain drives itself.
package final class GroupCommitBatcher<Row: Sendable>: Sendable {
    private struct Pending {
        var rows: [Row]
        var promise: EventLoopPromise<Void>
    }

    private struct State {
        var pending: [Pending] = []
        var writing = false
    }

    private let state = NIOLockedValueBox(State())
    private let maxBatchSize: Int
    private let write: @Sendable ([Row]) -> EventLoopFuture<Void>

    package init(maxBatchSize: Int, write: @escaping @Sendable ([Row]) -> EventLoopFuture<Void>) {
        self.maxBatchSize = max(1, maxBatchSize)
        self.write = write
    }

    /// Submits rows and waits until they are written (or the write failed).
    package func submit(_ rows: [Row], on eventLoop: any EventLoop) async throws {
        let promise = eventLoop.makePromise(of: Void.self)
        let startWrite = state.withLockedValue { state -> Bool in
            state.pending.append(Pending(rows: rows, promise: promise))
            if state.writing { return false }
            state.writing = true
            return true
        }
        if startWrite { writeNextBatch() }
        try await promise.futureResult.get()
    }

    /// Takes up to `maxBatchSize` rows' worth of submissions and writes them; chains to the next batch.
    private func writeNextBatch() {
        let batch: [Pending] = state.withLockedValue { state in
            guard !state.pending.isEmpty else {
                state.writing = false
                return []
            }
            var taken: [Pending] = []
            var count = 0
            while let next = state.pending.first, taken.isEmpty || count + next.rows.count <= maxBatchSize {
                taken.append(state.pending.removeFirst())
                count += next.rows.count
            }
            return taken
        }
        guard !batch.isEmpty else { return }
        let rows = batch.flatMap(\.rows)
        write(rows).whenComplete { result in
            switch result {
            case .success:
                for item in batch { item.promise.succeed() }
            case .failure(let error):
                for item in batch { item.promise.fail(error) }
            }
            self.writeNextBatch()
        }
    }
}
