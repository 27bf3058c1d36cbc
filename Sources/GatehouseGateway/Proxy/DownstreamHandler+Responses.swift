import GatehouseObservability
import NIOCore
import NIOHTTP1

/// How exchanges end: the response writer, the gateway's own replies, and the one exit every request passes.
extension DownstreamHandler {
    // MARK: Writing responses

    func writeResponseHead(_ head: HTTPResponseHead, answeringHEAD: Bool) {
        guard responseOutput == .http1Bytes else {
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            return
        }
        var buffer = output ?? context.channel.allocator.buffer(capacity: 512)
        serializer.writeHead(head, answeringHEAD: answeringHEAD, into: &buffer)
        output = buffer
    }

    func writeResponseBody(_ body: ByteBuffer) {
        guard responseOutput == .http1Bytes else {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            return
        }
        guard !serializer.suppressesBody else { return }
        let length = body.readableBytes
        if length <= Self.coalescingLimit {
            var buffer = output ?? context.channel.allocator.buffer(capacity: length + 16)
            serializer.writeBody(body, into: &buffer)
            output = buffer
            return
        }
        // A large part goes as it is (no copy), framed by what is around it.
        var buffer = output ?? context.channel.allocator.buffer(capacity: 16)
        serializer.writeBodyPrefix(length: length, into: &buffer)
        if buffer.readableBytes > 0 { context.write(NIOAny(buffer), promise: nil) }
        context.write(NIOAny(body), promise: nil)
        var suffix = context.channel.allocator.buffer(capacity: 2)
        serializer.writeBodySuffix(length: length, into: &suffix)
        output = suffix.readableBytes > 0 ? suffix : nil
    }

    func writeResponseEnd(_ trailers: HTTPHeaders?, promise: EventLoopPromise<Void>?) {
        guard responseOutput == .http1Bytes else {
            context.write(wrapOutboundOut(.end(trailers)), promise: promise)
            return
        }
        var buffer = output ?? context.channel.allocator.buffer(capacity: 8)
        serializer.writeEnd(trailers, into: &buffer)
        output = nil
        if buffer.readableBytes > 0 || promise != nil { context.write(NIOAny(buffer), promise: promise) }
    }

    /// Ends the response and flushes; with `close`, the connection closes once the end is written.
    func endResponse(_ trailers: HTTPHeaders?, close: Bool) {
        if close {
            let channel = context.channel
            let written = context.eventLoop.makePromise(of: Void.self)
            writeResponseEnd(trailers, promise: written)
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        } else {
            writeResponseEnd(trailers, promise: nil)
        }
        flushResponse()
    }

    /// Writes what is pending and flushes.
    func flushResponse() {
        if let buffer = output {
            output = nil
            context.write(NIOAny(buffer), promise: nil)
        }
        context.flush()
    }

    // MARK: Ending an exchange

    /// What happens to an exchange's upstream connection when it ends.
    enum UpstreamRelease {
        /// Back to the pool (reused if it can be).
        case pool
        /// Closed: the exchange was abandoned midway.
        case close
        /// Already handed back or torn down by the caller.
        case alreadyReleased
    }

    /// The upstream's response was relayed completely: end it, then go on with the connection's next request.
    func complete(_ exchange: Exchange, trailers: HTTPHeaders?) {
        answeringHEAD = false
        let now = clock.now()  // one read for the outcome and the idle timer
        finish(exchange, cause: .completed, upstream: .pool, now: now)
        let close = !exchange.keepAlive || !exchange.requestEnded || draining || exchange.isUpgrade || exchange.closeAfterResponse
        // (A response to HEAD ends without a terminating chunk: the serializer knows it answers HEAD.)
        endResponse(trailers, close: close)
        var closes = true
        transition { closes = try lifecycle.responseEnded(close: close, now: now.uptimeNanoseconds) }
        if closes {
            return
        } else if let reply = deferredError {
            deferredError = nil
            refuse(reply, requestID: loop.requestIDs.next(), method: nil, receivedAt: clock.now())
        } else {
            replayQueued()
        }
    }

    /// Ends an exchange with a reply of the gateway's own.
    func fail(_ exchange: Exchange, _ reply: GatewayReply, upstream: UpstreamRelease = .close) {
        exchange.responseStatus = Int(reply.status.code)
        finish(exchange, cause: reply.cause, upstream: upstream)
        var reply = reply
        // After an upgrade request the decoder stops parsing: the connection cannot carry another request.
        reply.closesConnection = reply.closesConnection || !exchange.keepAlive || exchange.context.admitted.requestsUpgrade
        render(reply, requestID: exchange.requestID, additions: exchange.context.responseAdditions)
    }

    /// Answers a request that never became an exchange (refused before or during admission).
    func refuse(_ reply: GatewayReply, requestID: String, method: HTTPMethod?, receivedAt: NIODeadline, trace: GatewayTrace? = nil) {
        let now = clock.now()
        let trace = refusalTrace(trace)  // tracing
        end(
            ExchangeOutcome(
                status: Int(reply.status.code), cause: reply.cause, route: nil, method: method?.rawValue ?? "-", requestID: requestID, bytesIn: 0,
                attempts: 0, target: nil, receivedAt: receivedAt, upstreamHeadAt: nil, endedAt: now, methodLabel: MethodLabel(method),
                trace: ExchangeTrace(trace: trace)
            )
        )
        render(reply, requestID: requestID, additions: traceResponseAdditions(trace))
    }

    /// The one exit of an exchange: the connection's reference to it goes, its upstream connection is released as
    /// `upstream` says, and the observers hear of it. Every exchange passes here exactly once.
    func finish(_ exchange: Exchange, cause: EndCause, upstream: UpstreamRelease, now: NIODeadline? = nil) {
        if self.exchange === exchange {
            self.exchange = nil
            transition { try lifecycle.exchangeFinished() }
        }
        // Still queued for a connection: give the place up now (the acquire's callback then only undoes the count).
        if exchange.acquiring { loop.pool.cancelWaiting(ObjectIdentifier(exchange), target: exchange.target) }
        if exchange.measurements.attemptOpen { attemptAbandoned(exchange, cause: cause) }
        if let connection = exchange.connection {
            switch upstream {
            case .pool:
                // An upstream that answered before the whole request was sent cannot be reused.
                if !exchange.requestEnded { connection.isReusable = false }
                loop.pool.release(connection, limits: exchange.route.cluster.poolLimits.limits)
            case .close:
                connection.isReusable = false
                connection.handler.delegate = nil
                connection.channel.close(promise: nil)
            case .alreadyReleased:
                break
            }
            exchange.connection = nil
            loop.finished(exchange.target)
        }
        // After the connection went back to the pool: a waiter granted the admission slot now (on this loop, at
        // once) can lease it.
        releasePolicyHolds(exchange)
        end(
            ExchangeOutcome(
                status: exchange.responseStatus, cause: cause, route: exchange.route.name, method: exchange.requestHead.method.rawValue,
                requestID: exchange.requestID, bytesIn: exchange.bodyBytes, attempts: exchange.attempts,
                target: exchange.target == .unassigned ? nil : exchange.target, receivedAt: exchange.context.receivedAt,
                upstreamHeadAt: exchange.upstreamHeadAt, endedAt: now ?? clock.now(), routeIndex: exchange.route.metricsIndex,
                methodLabel: MethodLabel(exchange.requestHead.method), exchange: exchange, trace: traceRecord(exchange, cause: cause)
            )
        )
    }

    /// Tells every observer. The only place they are called.
    func end(_ outcome: ExchangeOutcome) {
        for observer in loop.observers { observer.observe(outcome, loop: loop) }
    }

    // MARK: Replies

    /// Writes a reply of the gateway's own: a small JSON body with the request id. A closing reply stops reading
    /// the request; otherwise the connection goes on with its next (pipelined) request.
    func render(_ reply: GatewayReply, requestID: String, additions: HeaderAdditions) {
        // A draining connection takes no further requests.
        let close = reply.closesConnection || draining
        var body: ByteBuffer
        var headers = HTTPHeaders()
        headers.reserveCapacity(6 + reply.headers.count + additions.count)
        if let fixed = reply.fixed {
            body = context.channel.allocator.buffer(string: fixed.body)
            headers.add(name: "Content-Type", value: fixed.contentType)
            headers.add(name: "Content-Length", value: fixed.contentLength)
        } else {
            // The prefix was built with the reply (once, for the fixed ones): only the request id is new here.
            body = context.channel.allocator.buffer(capacity: reply.bodyPrefix.utf8.count + requestID.utf8.count + 2)
            body.writeString(reply.bodyPrefix)
            body.writeString(requestID)
            body.writeStaticString(GatewayReply.bodySuffix)
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.readableBytes))
        }
        headers.add(name: "X-Request-Id", value: requestID)
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in reply.headers { headers.add(name: name, value: value) }
        additions.forEach { headers.add(name: $0, value: $1) }
        if close { headers.add(name: "Connection", value: "close") }
        let now = clock.now()
        // A response to HEAD carries the Content-Length of the body it would have had, and no body: a client
        // would read one as the start of the next response.
        writeResponseHead(HTTPResponseHead(version: .http1_1, status: reply.status, headers: headers), answeringHEAD: answeringHEAD)
        if !answeringHEAD { writeResponseBody(body) }
        answeringHEAD = false
        endResponse(nil, close: close)
        var closes = true
        transition { closes = try lifecycle.responseEnded(close: close, now: now.uptimeNanoseconds) }
        if closes {
            return
        } else if exchange == nil, let deferred = deferredError {
            // A malformed request was pipelined behind the one just answered: its 400 and the close come now.
            deferredError = nil
            refuse(deferred, requestID: loop.requestIDs.next(), method: nil, receivedAt: clock.now())
        } else if exchange == nil {
            replayQueued()
        }
    }
}
