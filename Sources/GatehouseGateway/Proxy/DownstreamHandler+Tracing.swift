import GatehouseObservability
import NIOCore
import NIOHTTP1

/// Trace context at the gateway: the hooks the request path calls (one line each at its call sites), kept here.
///
/// Every request gets a trace (continued or new) whether sampled or not: `traceresponse` on every response, trace
/// headers upstream with a new span id per attempt. Sampled requests also record spans (the server span at the
/// one exit, a client span per attempt); unsampled ones allocate no span.
extension DownstreamHandler {
    /// The trace of a request head just scanned.
    func beginTrace(_ scan: RequestHeadScan) -> GatewayTrace {
        GatewayTrace.begin(scan, peerIsTrustedProxy: peer.isTrustedProxy, tracing: gateway.tracing, ids: &loop.traceIDs)
    }

    /// The response headers every answer to this request carries (`traceresponse`, maybe `X-Amzn-Trace-Id`).
    func traceResponseAdditions(_ trace: GatewayTrace) -> HeaderAdditions {
        var additions = HeaderAdditions()
        trace.appendResponseHeaders(to: &additions, tracing: gateway.tracing)
        return additions
    }

    /// Before the upstream head is built: the first attempt's span id and its trace headers.
    func prepareUpstreamTrace(_ exchange: Exchange) {
        guard let trace = exchange.context.trace else { return }
        let attempt = loop.traceIDs.nextSpanID()
        exchange.context.trace!.attemptSpanID = attempt
        trace.upstreamHeaders(attempt: attempt, tracing: gateway.tracing) { exchange.context.upstreamAdditions.append($0, $1) }
    }

    /// An attempt starts: the first uses the span id its head was built with; a retry gets a new one, written into
    /// the head it sends again.
    func traceAttemptStarted(_ exchange: Exchange) {
        guard let trace = exchange.context.trace else { return }
        if exchange.attempts > 1 || trace.attemptSpanID == nil {
            let attempt = loop.traceIDs.nextSpanID()
            exchange.context.trace!.attemptSpanID = attempt
            if exchange.upstreamHead != nil {
                trace.upstreamHeaders(attempt: attempt, tracing: gateway.tracing) { exchange.upstreamHead!.headers.replaceOrAdd(name: $0, value: $1) }
            }
        }
        exchange.context.trace!.attemptStartedAt = clock.now()
    }

    /// An attempt's result is known (a response head, a refused connection, a reset).
    func traceAttemptEnded(_ exchange: Exchange, _ result: AttemptResult, now: NIODeadline) {
        guard exchange.context.trace != nil else { return }
        switch result {
        case .response(let status):
            exchange.context.trace!.endAttempt(target: exchange.target, method: exchange.requestHead.method.rawValue, status: Int(status), error: nil, at: now)
        case .connectFailed:
            exchange.context.trace!.endAttempt(target: exchange.target, method: exchange.requestHead.method.rawValue, status: nil, error: "connect_failed", at: now)
        case .reset:
            exchange.context.trace!.endAttempt(target: exchange.target, method: exchange.requestHead.method.rawValue, status: nil, error: "reset", at: now)
        }
    }

    /// What the tracing observer (and the access log) learns of a finished exchange: the span attributes only for
    /// sampled requests.
    func traceRecord(_ exchange: Exchange, cause: EndCause) -> ExchangeTrace? {
        guard var trace = exchange.context.trace else { return nil }
        guard trace.request.sampled else { return ExchangeTrace(trace: trace) }
        if case .rejected(by: .bearer) = cause { trace.tokenOutcome = exchange.responseStatus == 503 ? .unavailable : .refused }
        // Still suspended (a timeout answered, the client left): the wait so far.
        if let kind = exchange.suspendedBy { trace.endSuspension(kind, at: clock.now()) }
        let context = exchange.context
        return ExchangeTrace(
            trace: trace, path: context.admitted.target.path, host: context.admitted.host, clientID: context.identity?.clientID, peerAddress: peer.address,
            decisions: PolicyDecisions(context, trace: trace)
        )
    }

    /// A policy suspended the request (a token exchange, a rate-limit delay, the admission queue): a sampled
    /// request notes when, for the wait on its span. An unsampled one reads no clock.
    func traceSuspended(_ exchange: Exchange) {
        guard exchange.context.trace?.request.sampled == true else { return }
        exchange.context.trace!.suspendedAt = clock.now()
    }

    /// The suspension of a sampled request ended (the policy resumed it, or refused it from the queue).
    func traceResumed(_ exchange: Exchange, _ kind: PolicyKind) {
        guard exchange.context.trace?.suspendedAt != nil else { return }
        exchange.context.trace!.endSuspension(kind, at: clock.now())
    }

    /// The trace of a request refused before it became an exchange (nil: not even its head was read; a new trace).
    func refusalTrace(_ trace: GatewayTrace?) -> GatewayTrace {
        if let trace { return trace }
        return GatewayTrace(
            request: RequestTrace.begin(incoming: nil, trusted: false, sampler: gateway.tracing.sampler, ids: &loop.traceIDs)
        )
    }
}

extension ExchangeObserver {
    /// The `tracing` observer: a sampled exchange's spans to the sink.
    static func recordSpans(_ outcome: ExchangeOutcome, loop: LoopState) {
        guard var record = outcome.trace, record.trace.request.sampled, let sink = loop.gateway?.tracing.sink else { return }
        if let target = outcome.target {
            // An attempt still open ended with the exchange (a timeout, the client leaving).
            record.trace.endAttempt(target: target, method: outcome.method, status: nil, error: outcome.cause.traceLabel, at: outcome.endedAt)
        }
        for span in record.trace.attemptSpans { sink.record(span) }
        sink.record(outcome.serverSpan(record))
    }
}
