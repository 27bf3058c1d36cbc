import GatehouseObservability
import NIOCore
import NIOHTTP1

/// A request's way in: admission, the route's policies, and the upstream head the gateway builds.
extension DownstreamHandler {
    func startExchange(_ head: HTTPRequestHead) {
        transition { try lifecycle.headReceived() }
        answeringHEAD = head.method == .HEAD
        gateway = loop.currentGateway(runtime)
        let receivedAt = clock.now()
        let scan = RequestHeadScan(head, maximumTargetLength: PathNormalizer.maximumLength)
        let requestID = RequestID.resolve(scan.clientRequestID) { loop.requestIDs.next() }
        let trace = beginTrace(scan)  // tracing
        let refusal = http2HeadRefusal
        http2HeadRefusal = nil
        let admitted: AdmittedRequest
        switch RequestAdmission.admit(head, scan, gateway: gateway, http2Refusal: refusal) {
        case .admit(let value): admitted = value
        case .refuse(let reply): return refuse(reply, requestID: requestID, method: head.method, receivedAt: receivedAt, trace: trace)
        }
        var requestContext = RequestContext(requestID: requestID, head: head, scan: scan, admitted: admitted, receivedAt: receivedAt)
        requestContext.trace = trace  // tracing
        requestContext.responseAdditions = traceResponseAdditions(trace)  // tracing
        let exchange = Exchange(context: requestContext)
        self.exchange = exchange
        transition { try lifecycle.exchangeStarted() }
        runPolicies(exchange, from: 0)
    }

    /// Runs the route's policies from `index`; forwards when all proceed.
    func runPolicies(_ exchange: Exchange, from index: Int) {
        let policies = exchange.route.policies.policies
        var position = index
        while position < policies.count {
            let policy = policies[position]
            switch policy.evaluate(&exchange.context, connection: &policyState, peer: peer, gateway: gateway, on: context.eventLoop) {
            case .proceed:
                position += 1
            case .reject(let reply):
                return fail(exchange, reply)
            case .suspend(let future):
                // Reads stay paused (no upstream connection yet), so a body waits in the socket.
                transition { try exchange.phase.suspend(by: policy.kind) }
                traceSuspended(exchange)  // tracing
                let resumeAt = position + 1
                future.whenComplete { result in
                    guard self.exchange === exchange else {
                        // The client left, or a timeout answered. A slot granted meanwhile goes on to the next waiter.
                        if case .success(.proceed) = result, case .admission(let admission) = policy { admission.release(now: self.clock.now()) }
                        return
                    }
                    self.transition { try exchange.phase.resume() }
                    self.traceResumed(exchange, policy.kind)  // tracing
                    switch result {
                    case .success(.proceed(let identity)):
                        switch policy {
                        case .bearer(let auth):
                            if let identity { RoutePolicy.accept(identity, auth, &exchange.context) }
                        case .admission(let admission):
                            exchange.context.admission = .holding(admission)
                            exchange.context.admissionOutcome = .admitted
                        case .priority, .rateLimit, .circuitBreaker:
                            break
                        }
                        self.runPolicies(exchange, from: resumeAt)
                    case .success(.reject(let reply)):
                        if case .admission = policy {
                            exchange.context.admission = .none  // answered from the queue: it holds no slot
                            exchange.context.admissionOutcome = .shed
                        }
                        self.fail(exchange, reply)
                    case .success(.rateLimit(let resolution)):
                        resolution.apply(to: &exchange.context)
                        if let reply = resolution.reply { return self.fail(exchange, reply) }
                        self.runPolicies(exchange, from: resumeAt)
                    case .failure:
                        self.fail(exchange, RoutePolicy.unavailable("the request could not be checked; retry later", close: true))
                    }
                }
                return
            }
        }
        forward(exchange)
    }

    /// Builds the upstream head from the admission's decisions and the policies' additions, and sends it on its way.
    func forward(_ exchange: Exchange) {
        transition { try exchange.phase.forwarded() }
        let host = exchange.context.admitted.host
        let forwarded: String
        if let cached = forwardedCache, cached.host == host {
            forwarded = cached.value
        } else {
            forwarded = HeaderHygiene.forwardedElement(peer: peer, host: host)
            forwardedCache = (host, forwarded)
        }
        prepareUpstreamTrace(exchange)  // tracing: the first attempt's span and its trace headers
        // The client's credentials stay here; the backend gets the gateway's JWT (and no client-made copy of it).
        var headers = HeaderHygiene.requestHeaders(
            from: exchange.requestHead.headers, peer: peer, requestID: exchange.requestID, via: gateway.via, isUpgrade: exchange.isUpgrade,
            forwarded: forwarded, removing: exchange.route.strippedRequestHeaders, adding: exchange.context.upstreamAdditions,
            filter: gateway.headerFilter, host: exchange.context.admitted.target.authority
        )
        // The framing header is the gateway's own, from what it forwards: a body is always framed, whatever the
        // client's `Connection` named (a body-carrying GET left unframed would be read upstream as more requests).
        exchange.framing.apply(to: &headers, method: exchange.requestHead.method)
        exchange.upstreamHead = HTTPRequestHead(
            version: .http1_1, method: exchange.requestHead.method, uri: exchange.context.admitted.upstreamTarget, headers: headers
        )
        dispatch(exchange)
    }
}
