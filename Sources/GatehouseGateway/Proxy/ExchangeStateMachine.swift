/// One exchange's request and response sub-states and its deadlines, kept with the exchange. Events in, actions
/// out; it replaces the flags the exchange carried (`requestEnded`, `responseHeadSent`, `suspendedBy`, the per-try
/// and total deadlines).
struct ExchangeStateMachine: Equatable {
    enum Request: Equatable {
        /// Body parts may still arrive.
        case streaming
        /// The request's end arrived.
        case ended
    }

    enum Response: Equatable {
        /// The route's policies run, or one holds the request (`suspendedBy`): the upstream has not been asked.
        case policies(suspendedBy: PolicyKind?)
        /// Forwarded: the response head is due by `perTryDeadline` (`.max` until the head is written upstream).
        case upstream(perTryDeadline: UInt64)
        /// The response head went to the client; its body is being relayed.
        case relaying
        /// `101 Switching Protocols` went to the client: no deadline applies, a tunnel follows.
        case switchingProtocols
    }

    /// What the ticker must do with the exchange.
    enum TimeoutAction: Equatable {
        case none
        /// The total timeout fired mid-response: end the exchange as truncated and close.
        case truncate
        /// The total timeout fired while a policy held the request (the upstream was never asked).
        case suspensionTimedOut(PolicyKind)
        /// The total timeout fired while the upstream had not answered.
        case totalTimeout
        /// The per-try timeout fired while the upstream had not answered.
        case perTryTimeout
    }

    private(set) var request: Request = .streaming
    private(set) var response: Response = .policies(suspendedBy: nil)
    /// The whole exchange must be over by then.
    private(set) var totalDeadline: UInt64

    init(totalDeadline: UInt64) {
        self.totalDeadline = totalDeadline
    }

    var requestEnded: Bool { request == .ended }
    var responseHeadSent: Bool {
        switch response {
        case .relaying, .switchingProtocols: true
        case .policies, .upstream: false
        }
    }
    var suspendedBy: PolicyKind? {
        if case .policies(let kind) = response { return kind }
        return nil
    }

    mutating func requestEnd() throws(ConnectionStateMachine.IllegalTransition) {
        guard request == .streaming else { throw illegal("requestEnd") }
        request = .ended
    }

    /// A policy answered *suspend*.
    mutating func suspend(by kind: PolicyKind) throws(ConnectionStateMachine.IllegalTransition) {
        guard response == .policies(suspendedBy: nil) else { throw illegal("suspend") }
        response = .policies(suspendedBy: kind)
    }

    /// The suspending policy's future completed (to proceed or reject).
    mutating func resume() throws(ConnectionStateMachine.IllegalTransition) {
        guard case .policies(.some) = response else { throw illegal("resume") }
        response = .policies(suspendedBy: nil)
    }

    /// Every policy proceeded: the request goes upstream.
    mutating func forwarded() throws(ConnectionStateMachine.IllegalTransition) {
        guard response == .policies(suspendedBy: nil) else { throw illegal("forwarded") }
        response = .upstream(perTryDeadline: .max)
    }

    /// The head was written to an upstream connection: its response head is due by `perTryDeadline`.
    mutating func upstreamHeadWritten(perTryDeadline: UInt64) throws(ConnectionStateMachine.IllegalTransition) {
        guard case .upstream = response else { throw illegal("upstreamHeadWritten") }
        response = .upstream(perTryDeadline: perTryDeadline)
    }

    /// Another try starts: no per-try deadline until its head is written.
    mutating func retrying() throws(ConnectionStateMachine.IllegalTransition) {
        guard case .upstream = response else { throw illegal("retrying") }
        response = .upstream(perTryDeadline: .max)
    }

    /// The upstream's final response head went to the client (`switchingProtocols`: a 101 to an upgrade).
    mutating func responseHeadSent(switchingProtocols: Bool) throws(ConnectionStateMachine.IllegalTransition) {
        guard case .upstream = response else { throw illegal("responseHeadSent") }
        if switchingProtocols {
            response = .switchingProtocols
            totalDeadline = .max
        } else {
            response = .relaying
        }
    }

    /// The loop's ticker.
    func tick(now: UInt64) -> TimeoutAction {
        if now >= totalDeadline {
            switch response {
            case .relaying, .switchingProtocols: return .truncate
            case .policies(.some(let kind)): return .suspensionTimedOut(kind)
            case .policies(nil), .upstream: return .totalTimeout
            }
        }
        if case .upstream(let perTryDeadline) = response, now >= perTryDeadline { return .perTryTimeout }
        return .none
    }

    private func illegal(_ event: String) -> ConnectionStateMachine.IllegalTransition {
        ConnectionStateMachine.IllegalTransition(event: "\(event) in \(request)/\(response)", state: .exchange)
    }
}
