import GatehouseHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// Counts of the span exporter, for `/metrics` and the admin listener's `/tracing`.
public struct TracingStatistics: Sendable, Equatable {
    /// Spans handed to the exporter.
    public var recorded = 0
    /// Spans the collector accepted.
    public var exported = 0
    /// Spans lost: the queue was full (a slow or absent collector), or their batch failed.
    public var dropped = 0
    /// Export requests that failed (connection refused, timeout, non-2xx).
    public var failedExports = 0
    /// Spans waiting in the queue now.
    public var queued = 0

    public init() {}
}

/// Exports finished spans with OTLP over HTTP (`POST {endpoint}`, `Content-Type: application/x-protobuf`) in
/// batches, from its own task (a `Service` in the server's group), never from a request's path: `record` appends
/// to a bounded queue under a lock held for the append only, and when the queue is full the span is dropped and
/// counted. A collector that is slow or down therefore costs requests nothing; it costs spans.
public final class SpanExporter: SpanSink, Service, Sendable {
    public struct Configuration: Sendable {
        /// The full traces URL (`http://127.0.0.1:4318/v1/traces`).
        public var endpoint: String
        /// Resource attributes (`service.name` first).
        public var resource: [FinishedSpan.Attribute]
        /// Spans kept waiting at most; more are dropped. Default 2048 (OpenTelemetry's `OTEL_BSP_MAX_QUEUE_SIZE`).
        public var maximumQueueSize: Int = 2048
        /// Spans per export request. Default 512 (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
        public var maximumBatchSize: Int = 512
        /// How long spans wait for company before an export. Default 500 ms (OpenTelemetry's 5 s is long for a
        /// demo and for tests; the batch size bounds the cost anyway).
        public var scheduleDelay: Duration = .milliseconds(500)
        /// One export request's timeout. Default 10 s (`OTEL_EXPORTER_OTLP_TIMEOUT`).
        public var exportTimeout: TimeAmount = .seconds(10)

        public init(endpoint: String, resource: [FinishedSpan.Attribute]) {
            self.endpoint = endpoint
            self.resource = resource
        }
    }

    private struct State {
        var queue: [FinishedSpan] = []
        var statistics = TracingStatistics()
    }

    public let configuration: Configuration
    private let state = NIOLockedValueBox(State())
    private let client: HTTPClient
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger, client: HTTPClient = HTTPClient(configuration: .init(maximumIdlePerOrigin: 1, responseSizeLimit: 64 * 1024))) {
        self.configuration = configuration
        self.logger = logger
        self.client = client
    }

    public func record(_ span: FinishedSpan) {
        let limit = configuration.maximumQueueSize
        state.withLockedValue { state in
            state.statistics.recorded += 1
            if state.queue.count >= limit {
                state.statistics.dropped += 1
            } else {
                state.queue.append(span)
            }
        }
    }

    public var statistics: TracingStatistics {
        state.withLockedValue { state in
            var statistics = state.statistics
            statistics.queued = state.queue.count
            return statistics
        }
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: configuration.scheduleDelay)
            await exportQueued()
        }
        await exportQueued()  // what ended before the shutdown still goes
        client.shutdown()
    }

    /// Exports everything queued now, batch after batch.
    public func exportQueued() async {
        while true {
            let batchSize = configuration.maximumBatchSize
            let batch = state.withLockedValue { state -> [FinishedSpan] in
                let count = min(batchSize, state.queue.count)
                let batch = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                return batch
            }
            if batch.isEmpty { return }
            let ok = await export(batch)
            state.withLockedValue { state in
                if ok {
                    state.statistics.exported += batch.count
                } else {
                    state.statistics.failedExports += 1
                    state.statistics.dropped += batch.count
                }
            }
            if !ok { return }  // the collector is failing: the next round tries again
        }
    }

    private func export(_ batch: [FinishedSpan]) async -> Bool {
        let body = OTLPEncoding.exportTraceServiceRequest(spans: batch, resource: configuration.resource, scopeName: "gatehouse")
        do {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/x-protobuf")
            var request = try HTTPClientRequest(url: configuration.endpoint, method: .POST, headers: headers, body: ByteBuffer(bytes: body))
            // An export the collector never saw can go again; one it saw and answered is not retried.
            request.retryOnStaleConnection = true
            let response = try await client.execute(request, timeout: configuration.exportTimeout)
            guard (200..<300).contains(response.status) else {
                logger.warning("the OTLP collector refused a batch of spans", metadata: ["status": "\(response.status)", "spans": "\(batch.count)"])
                return false
            }
            return true
        } catch {
            logger.warning("spans could not be exported", metadata: ["error": "\(error)", "spans": "\(batch.count)"])
            return false
        }
    }
}
