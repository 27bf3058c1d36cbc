import GatehouseObservability
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// SIGUSR1: every access log reopens its file (after logrotate or an operator moved it away, new lines go to a new
/// file at the configured path). `gatehouse demo` runs two servers that may each ask for it; one traps the signal
/// (`AccessLogWriter.reopenAll` reaches every writer), the other only waits for shutdown.
struct AccessLogReopenService: Service {
    let logger: Logger
    private static let trapping = Mutex(false)

    func run() async throws {
        let first = Self.trapping.withLock { trapping in
            defer { trapping = true }
            return !trapping
        }
        guard first else {
            try? await gracefulShutdown()
            return
        }
        defer { Self.trapping.withLock { $0 = false } }
        let signals = await UnixSignalsSequence(trapping: .sigusr1)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                AccessLogWriter.reopenAll()
                logger.notice("access logs reopened")
            }
        }
    }
}
