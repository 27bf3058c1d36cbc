import NIOCore
import NIOHTTP1

/// The upstream leg of an exchange: target choice, connection lease, retries, the request's framing and parts, and
/// the response parts coming back.
extension DownstreamHandler {
    /// Picks the upstream target and sends the request to it.
    func dispatch(_ exchange: Exchange) {
        guard let target = loop.pickTarget(exchange.route.cluster, now: clock.now()) else {
            return fail(exchange, GatewayReply(.serviceUnavailable, "no healthy upstream in cluster \(exchange.route.cluster.name)", closes: false, cause: .noHealthyTarget))
        }
        exchange.target = target
        connect(exchange)
    }

    // MARK: Attempt hooks
    //
    // Every try of an exchange starts in `attemptStarted` and its result is reported once to `attemptEnded`: the
    // one place that feeds passive outlier detection (and the circuit breaker and per-attempt metrics next).

    /// How one try ended, as the attempt observers see it.
    enum AttemptResult {
        /// A response head arrived with this status.
        case response(status: UInt)
        case connectFailed
        case reset
    }

    func attemptStarted(_ exchange: Exchange) {
        exchange.attempts += 1
        if exchange.route.breaker != nil { exchange.attemptStartedAt = clock.now() }
        loop.started(exchange.target)
        measureAttemptStart(exchange)
        traceAttemptStarted(exchange)  // tracing
    }

    func attemptEnded(_ exchange: Exchange, _ result: AttemptResult, now: NIODeadline) {
        if let breaker = exchange.route.breaker, let started = exchange.attemptStartedAt, let ticket = exchange.context.breakerTicket {
            exchange.attemptStartedAt = nil
            exchange.context.breakerRecorded = true
            var status: UInt?
            if case .response(let code) = result { status = code }
            breaker.record(status: status, duration: now.uptimeNanoseconds &- started.uptimeNanoseconds, ticket: ticket, now: now)
        }
        measureAttemptEnd(exchange, result, now: now)
        traceAttemptEnded(exchange, result, now: now)  // tracing
        switch result {
        case .response(let status) where status < 500:
            exchange.route.cluster.health.recordSuccess(exchange.target)
        case .response, .connectFailed, .reset:
            exchange.route.cluster.health.recordFailure(exchange.target, now: now)
        }
    }

    func connect(_ exchange: Exchange) {
        attemptStarted(exchange)
        if let connection = loop.pool.acquireIdle(exchange.target) {
            attach(connection, to: exchange)
            return
        }
        let limits = exchange.route.cluster.poolLimits.limits
        // Captures self strongly: a weak capture would give the handler a side table and slow every later
        // retain of it; the future completes within the connect timeout anyway.
        let pool = loop.pool
        exchange.acquiring = true
        loop.pool.acquire(exchange.target, limits: limits, for: ObjectIdentifier(exchange)).whenComplete { result in
            exchange.acquiring = false
            guard self.exchange === exchange else {
                // The exchange ended while the connection was being acquired: undo its in-flight count too.
                self.loop.finished(exchange.target)
                if case .success(let connection) = result {
                    // Released on the next loop tick, not here: handing it to the next waiter runs that waiter's
                    // callback inside this one, and thousands of abandoned waiters would nest that deep.
                    pool.eventLoop.execute { pool.release(connection, limits: limits) }
                }
                return
            }
            switch result {
            case .success(let connection):
                self.attach(connection, to: exchange)
            case .failure(let error):
                self.loop.finished(exchange.target)
                self.attemptEnded(exchange, .connectFailed, now: self.clock.now())
                if self.retry(exchange) { return }
                let reply: GatewayReply =
                    (error as? UpstreamError) == .poolExhausted
                    ? GatewayReply(.serviceUnavailable, "too many requests waiting for cluster \(exchange.route.cluster.name)", closes: !exchange.requestEnded, cause: .poolExhausted)
                    : GatewayReply.upstreamRefused.closing(!exchange.requestEnded)
                self.fail(exchange, reply)
            }
        }
    }

    /// Another try on another target, for idempotent requests without a body, within the route's attempts.
    func retry(_ exchange: Exchange) -> Bool {
        let now = clock.now()
        guard exchange.retryable, !exchange.responseHeadSent, exchange.attempts <= exchange.route.cluster.retryAttempts,
            let next = loop.pickTarget(exchange.route.cluster, excluding: exchange.target, now: now) ?? loop.pickTarget(exchange.route.cluster, now: now)
        else { return false }
        exchange.target = next
        transition { try exchange.phase.retrying() }  // the deadline comes with the new head
        exchange.headWritten = false
        exchange.buffered = []  // a retryable request has no body, so its end writes nothing either
        connect(exchange)
        return true
    }

    func attach(_ connection: UpstreamConnection, to exchange: Exchange) {
        exchange.connection = connection
        connection.handler.delegate = self
        guard exchange.framing != .undecided else {
            // The head waits for the first DATA frame or the end of the stream; keep reading to learn which.
            if pendingRead {
                pendingRead = false
                context.read()
            }
            return
        }
        writeUpstreamHead(exchange, connection)
    }

    /// Settles an HTTP/2 request's framing at its first DATA frame (`.chunked`) or its end (`.none`), and sends the
    /// head if a connection waits for it. False when the request was refused instead.
    func decideFraming(_ framing: UpstreamFraming, _ exchange: Exchange) -> Bool {
        if framing == .chunked && exchange.requestHead.method == .TRACE {
            fail(exchange, .traceWithBody)
            return false
        }
        exchange.framing = framing
        // Before `forward` there is no head yet; it applies the settled framing when it builds one.
        if exchange.upstreamHead != nil { framing.apply(to: &exchange.upstreamHead!.headers, method: exchange.requestHead.method) }
        exchange.upstreamChunked = framing == .chunked
        exchange.retryable = exchange.context.admitted.idempotent && framing == .none && !exchange.isUpgrade
        if let connection = exchange.connection, !exchange.headWritten { writeUpstreamHead(exchange, connection) }
        return true
    }

    func writeUpstreamHead(_ exchange: Exchange, _ connection: UpstreamConnection) {
        guard let upstreamHead = exchange.upstreamHead else { return }  // never: a connection is leased after `forward`
        exchange.headWritten = true
        // The head first (every try sends it again), then whatever of the body arrived meanwhile.
        connection.channel.write(NIOAny(HTTPClientRequestPart.head(upstreamHead)), promise: nil)
        if !exchange.buffered.isEmpty {
            for part in exchange.buffered { connection.channel.write(NIOAny(part), promise: nil) }
            exchange.buffered.removeAll()
        }
        connection.channel.flush()
        let perTryDeadline = (clock.now() + exchange.route.perTryTimeout).uptimeNanoseconds
        transition { try exchange.phase.upstreamHeadWritten(perTryDeadline: perTryDeadline) }
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    func send(_ part: HTTPClientRequestPart, _ exchange: Exchange) {
        if let connection = exchange.connection, exchange.headWritten {
            connection.channel.write(NIOAny(part), promise: nil)
        } else {
            exchange.buffered.append(part)
        }
    }

    // MARK: Inbound from the upstream

    var downstreamIsWritable: Bool { context?.channel.isWritable ?? false }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable && pendingRead {
            pendingRead = false
            context.read()
        }
    }

    func upstream(received part: HTTPClientResponsePart) {
        guard let exchange else { return }
        switch part {
        case .head(let head):
            if head.status == .switchingProtocols && exchange.isUpgrade {
                transition { try exchange.phase.responseHeadSent(switchingProtocols: true) }
                exchange.responseStatus = 101
                exchange.upstreamHeadAt = clock.now()
                let headers = HeaderHygiene.responseHeaders(
                    from: head.headers, via: gateway.via, requestID: exchange.requestID, isUpgrade: true, adding: exchange.context.responseAdditions
                )
                writeResponseHead(HTTPResponseHead(version: exchange.requestHead.version, status: head.status, headers: headers), answeringHEAD: false)
                return
            }
            if head.status.code < 200 {
                // 100 Continue and other informational responses pass through; 101 only for upgrade requests.
                guard head.status != .switchingProtocols else { return }
                writeResponseHead(HTTPResponseHead(version: exchange.requestHead.version, status: head.status, headers: head.headers), answeringHEAD: false)
                return
            }
            let now = clock.now()
            exchange.upstreamHeadAt = now
            if !head.isKeepAlive { exchange.connection?.isReusable = false }
            attemptEnded(exchange, .response(status: head.status.code), now: now)
            // An HTTP/1.0 client gets a body without a length delimited by the close (the serializer's rule).
            let answeringHEAD = exchange.requestHead.method == .HEAD
            let closeDelimited =
                responseOutput == .http1Bytes
                && HTTP1ResponseSerializer.isCloseDelimited(status: head.status, version: exchange.requestHead.version, headers: head.headers, answeringHEAD: answeringHEAD)
            if closeDelimited { exchange.closeAfterResponse = true }
            let headers = HeaderHygiene.responseHeaders(
                from: head.headers, via: gateway.via, requestID: exchange.requestID, isUpgrade: false,
                close: !exchange.keepAlive || draining || exchange.closeAfterResponse, adding: exchange.context.responseAdditions
            )
            transition { try exchange.phase.responseHeadSent(switchingProtocols: false) }
            exchange.responseStatus = Int(head.status.code)
            writeResponseHead(HTTPResponseHead(version: exchange.requestHead.version, status: head.status, headers: headers), answeringHEAD: answeringHEAD)
        case .body(let buffer):
            guard exchange.responseHeadSent, exchange.requestHead.method != .HEAD else { return }
            exchange.measurements.bytesOut &+= buffer.readableBytes
            writeResponseBody(buffer)
        case .end(let trailers):
            guard exchange.responseHeadSent else { return }
            if exchange.switchingProtocols {
                startTunnel(exchange)
                return
            }
            complete(exchange, trailers: trailers)
        }
    }

    func upstreamReadComplete() {
        if context != nil { flushResponse() }
    }

    func upstream(failed error: any Error) {
        guard let exchange, let connection = exchange.connection else { return }
        connection.isReusable = false
        connection.handler.delegate = nil
        exchange.connection = nil
        loop.finished(exchange.target)
        if exchange.responseHeadSent {
            // Mid-response: the client cannot be told cleanly; end the connection so it sees a truncated message.
            finish(exchange, cause: .truncated, upstream: .alreadyReleased)
            lifecycle.closeNow()
            context.close(promise: nil)
            return
        }
        attemptEnded(exchange, .reset, now: clock.now())
        if exchange.requestEnded, retry(exchange) { return }
        fail(exchange, GatewayReply.upstreamReset.closing(!exchange.requestEnded), upstream: .alreadyReleased)
    }
}
