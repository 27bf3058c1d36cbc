/// The lifecycle of one downstream connection as a value: events in, actions out (as Hummingbird's
/// `HTTPConnectionStateHandler.StateMachine` and AsyncHTTPClient's `HTTP1ConnectionStateMachine`). It owns what used
/// to be flags on `DownstreamHandler` — the header-read deadline, the last activity, closing, draining — and knows
/// whether an exchange is in flight; the exchange's own request/response sub-states are `ExchangeStateMachine`,
/// kept with the exchange (whose data outlives its end by a few lines in the handler).
///
/// Time is uptime nanoseconds (the handler passes `GatewayClock` readings), so the machine needs no NIO type and
/// is tested without a channel (`ConnectionStateMachineTests`).
///
/// ```
///            bytes / connect                  head admitted
///   idle ─────────────────▶ readingHead ─────────────────────▶ exchange ──┐ exchange finished
///    ▲  ◀── head received ──────┘        (refused: stays idle)            │
///    └──────────────────────── response ended, keep-alive ◀───────────────┘
///   any state ── response ended with close / drain outside an exchange / client gone ──▶ closing
/// ```
struct ConnectionStateMachine: Equatable {
    enum State: Equatable {
        /// No request in progress: only the idle timeout applies.
        case idle
        /// A request's first bytes have arrived (or the connection just opened): its head must be complete by
        /// `deadline` (slowloris).
        case readingHead(deadline: UInt64)
        /// An exchange is in flight (see its `ExchangeStateMachine`).
        case exchange
        /// The gateway decided to close (once the last response is written): nothing more from the client is acted
        /// on, and reads stop. Bytes that still arrive arm a header read `deadline` (`.max`: none), so a client that
        /// neither reads its answer nor stops sending is cut off as a slow one would be.
        case closing(deadline: UInt64)
    }

    /// What the handler must do.
    enum Action: Equatable {
        case none
        /// Close the connection.
        case close
        /// An exchange is in flight: its own deadlines decide (`ExchangeStateMachine.tick`).
        case checkExchange
    }

    /// An event that the state does not allow. The handler treats it as a bug (asserted in debug builds) and
    /// leaves the state as it was.
    struct IllegalTransition: Error, Equatable {
        let event: String
        let state: State
    }

    private(set) var state: State = .idle
    /// A graceful shutdown asked the connection to finish its exchange, then close.
    private(set) var draining = false
    /// The last time anything arrived from the client or a response ended (idle timeout).
    private(set) var lastActivity: UInt64

    init(now: UInt64) {
        lastActivity = now
    }

    var isClosing: Bool {
        if case .closing = state { return true }
        return false
    }
    var inExchange: Bool { state == .exchange }

    /// The connection is active (accepted): its first head must arrive within the header read timeout.
    mutating func activated(now: UInt64, headerReadTimeout: UInt64) {
        switch state {
        case .idle, .readingHead: state = .readingHead(deadline: now &+ headerReadTimeout)
        case .exchange, .closing: break
        }
    }

    /// Bytes arrived: between requests, the start of one (its head is due within the header read timeout). The
    /// clock is read only when that deadline is armed.
    mutating func bytesArrived(now: @autoclosure () -> UInt64, headerReadTimeout: UInt64) {
        switch state {
        case .idle: state = .readingHead(deadline: now() &+ headerReadTimeout)
        case .closing(.max): state = .closing(deadline: now() &+ headerReadTimeout)
        case .readingHead, .exchange, .closing: break
        }
    }

    /// Something arrived from the client.
    mutating func activity(now: UInt64) {
        lastActivity = now
    }

    /// A request head is complete: the header read timeout no longer applies (admission decides next).
    mutating func headReceived() throws(IllegalTransition) {
        switch state {
        case .idle, .readingHead: state = .idle
        case .exchange, .closing: throw IllegalTransition(event: "headReceived", state: state)
        }
    }

    /// Admission let the request in: an exchange starts.
    mutating func exchangeStarted() throws(IllegalTransition) {
        guard state == .idle else { throw IllegalTransition(event: "exchangeStarted", state: state) }
        state = .exchange
    }

    /// The exchange passed the one exit (`finish`); its response may still be ending.
    mutating func exchangeFinished() throws(IllegalTransition) {
        switch state {
        case .exchange: state = .idle
        case .closing: break  // the client went away first
        case .idle, .readingHead: throw IllegalTransition(event: "exchangeFinished", state: state)
        }
    }

    /// A response (relayed or the gateway's own) was ended; `close` when the connection closes after it (a
    /// draining connection always does). Returns whether it closes.
    mutating func responseEnded(close: Bool, now: UInt64) throws(IllegalTransition) -> Bool {
        switch state {
        case .idle:
            lastActivity = now
            let closes = close || draining
            state = closes ? .closing(deadline: .max) : .idle
            return closes
        case .readingHead(let deadline):  // a refusal of a head that never became a request (malformed)
            lastActivity = now
            let closes = close || draining
            state = closes ? .closing(deadline: deadline) : .idle
            return closes
        case .closing:
            // An answer to a malformed request that the decoder reported after the close was decided.
            lastActivity = now
            return true
        case .exchange:
            throw IllegalTransition(event: "responseEnded", state: state)
        }
    }

    /// The gateway decided to close without a response ending (a truncated response, a client error).
    mutating func closeNow() {
        if !isClosing { state = .closing(deadline: .max) }
    }

    /// A graceful shutdown: an idle connection closes now, one in an exchange after its response.
    mutating func drain() -> Action {
        draining = true
        switch state {
        case .exchange: return .none
        case .idle: state = .closing(deadline: .max)
        case .readingHead(let deadline): state = .closing(deadline: deadline)
        case .closing: break
        }
        return .close
    }

    /// The client's side closed.
    mutating func inactive() {
        state = .closing(deadline: .max)
    }

    /// The loop's ticker: the header read and idle timeouts; an exchange's own deadlines are its machine's.
    func tick(now: UInt64, idleTimeout: UInt64) -> Action {
        switch state {
        case .exchange:
            return .checkExchange
        case .readingHead(let deadline) where now >= deadline, .closing(let deadline) where now >= deadline:
            return .close
        case .idle, .readingHead, .closing:
            return now &- lastActivity >= idleTimeout ? .close : .none
        }
    }
}
