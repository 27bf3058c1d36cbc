import Testing

@testable import GatehouseGateway

/// The downstream connection's lifecycle and an exchange's sub-states as values: events in, actions out, no
/// channel and no clock but the numbers passed in (nanoseconds).
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine
    static let headerReadTimeout: UInt64 = 1_000
    static let idleTimeout: UInt64 = 5_000

    @Test func aNewConnectionMustSendItsHeadWithinTheHeaderReadTimeout() {
        var machine = Machine(now: 0)
        machine.activated(now: 0, headerReadTimeout: Self.headerReadTimeout)
        #expect(machine.state == .readingHead(deadline: 1_000))
        #expect(machine.tick(now: 999, idleTimeout: Self.idleTimeout) == .none)
        #expect(machine.tick(now: 1_000, idleTimeout: Self.idleTimeout) == .close)
    }

    @Test func aKeepAliveRequestCycle() throws {
        var machine = Machine(now: 0)
        machine.activated(now: 0, headerReadTimeout: Self.headerReadTimeout)
        machine.activity(now: 10)
        try machine.headReceived()
        #expect(machine.state == .idle)  // admission decides next; no header deadline meanwhile
        try machine.exchangeStarted()
        #expect(machine.inExchange)
        // In an exchange the connection's timeouts do not apply: the exchange's deadlines do.
        #expect(machine.tick(now: 1_000_000, idleTimeout: Self.idleTimeout) == .checkExchange)
        try machine.exchangeFinished()
        #expect(try machine.responseEnded(close: false, now: 2_000) == false)
        #expect(machine.state == .idle)
        #expect(machine.tick(now: 6_999, idleTimeout: Self.idleTimeout) == .none)
        #expect(machine.tick(now: 7_000, idleTimeout: Self.idleTimeout) == .close)  // idle since the response ended
    }

    @Test func bytesBetweenRequestsArmTheHeaderDeadlineOnce() {
        var machine = Machine(now: 0)
        var clockReads = 0
        func now() -> UInt64 {
            clockReads += 1
            return 100
        }
        machine.bytesArrived(now: now(), headerReadTimeout: Self.headerReadTimeout)
        machine.bytesArrived(now: now(), headerReadTimeout: Self.headerReadTimeout)
        #expect(machine.state == .readingHead(deadline: 1_100))
        #expect(clockReads == 1)  // the clock is read only to arm the deadline
    }

    @Test func aRefusedHeadLeavesTheConnectionIdleOrClosing() throws {
        var machine = Machine(now: 0)
        try machine.headReceived()
        #expect(try machine.responseEnded(close: false, now: 5) == false)
        #expect(machine.state == .idle)
        try machine.headReceived()
        #expect(try machine.responseEnded(close: true, now: 6) == true)
        #expect(machine.state == .closing(deadline: .max))
        #expect(machine.isClosing)
    }

    @Test func aMalformedHeadAnsweredWhileReadingKeepsItsDeadlineWhileClosing() throws {
        var machine = Machine(now: 0)
        machine.bytesArrived(now: 0, headerReadTimeout: Self.headerReadTimeout)
        #expect(try machine.responseEnded(close: true, now: 10) == true)
        #expect(machine.state == .closing(deadline: 1_000))
        #expect(machine.tick(now: 1_000, idleTimeout: Self.idleTimeout) == .close)
    }

    @Test func aClosingConnectionThatStillSendsIsCutOffAtTheHeaderReadTimeout() throws {
        var machine = Machine(now: 0)
        try machine.headReceived()
        _ = try machine.responseEnded(close: true, now: 0)
        #expect(machine.tick(now: 4_000, idleTimeout: Self.idleTimeout) == .none)
        machine.bytesArrived(now: 500, headerReadTimeout: Self.headerReadTimeout)
        #expect(machine.state == .closing(deadline: 1_500))
        #expect(machine.tick(now: 1_500, idleTimeout: Self.idleTimeout) == .close)
    }

    @Test func drainingClosesAnIdleConnectionAtOnceAndABusyOneAfterItsResponse() throws {
        var idle = Machine(now: 0)
        #expect(idle.drain() == .close)
        #expect(idle.isClosing && idle.draining)

        var busy = Machine(now: 0)
        try busy.headReceived()
        try busy.exchangeStarted()
        #expect(busy.drain() == .none)
        try busy.exchangeFinished()
        #expect(try busy.responseEnded(close: false, now: 1) == true)  // a keep-alive response still closes
        #expect(busy.isClosing)
    }

    @Test func aClientThatLeavesMidExchangeClosesIt() throws {
        var machine = Machine(now: 0)
        try machine.headReceived()
        try machine.exchangeStarted()
        machine.inactive()
        #expect(machine.isClosing)
        try machine.exchangeFinished()  // the exchange then ends at the one exit
        #expect(machine.isClosing)
    }

    @Test func illegalTransitionsAreRefusedAndLeaveTheStateAsItWas() throws {
        var machine = Machine(now: 0)
        #expect(throws: Machine.IllegalTransition(event: "exchangeFinished", state: .idle)) { try machine.exchangeFinished() }
        machine.bytesArrived(now: 0, headerReadTimeout: Self.headerReadTimeout)
        #expect(throws: Machine.IllegalTransition.self) { try machine.exchangeStarted() }  // no head yet
        #expect(machine.state == .readingHead(deadline: 1_000))
        try machine.headReceived()
        try machine.exchangeStarted()
        #expect(throws: Machine.IllegalTransition.self) { try machine.headReceived() }  // pipelined heads wait in the queue
        #expect(throws: Machine.IllegalTransition.self) { try machine.exchangeStarted() }
        #expect(throws: Machine.IllegalTransition.self) { _ = try machine.responseEnded(close: false, now: 0) }
        #expect(machine.state == .exchange)
        machine.closeNow()
        #expect(throws: Machine.IllegalTransition.self) { try machine.headReceived() }
        #expect(machine.isClosing)
    }
}

@Suite struct ExchangeStateMachineTests {
    typealias Machine = ExchangeStateMachine

    @Test func aForwardedRequestHasAPerTryDeadlineOnceItsHeadIsWritten() throws {
        var exchange = Machine(totalDeadline: 10_000)
        try exchange.forwarded()
        #expect(exchange.tick(now: 9_999) == .none)  // no per-try deadline before the head is written
        try exchange.upstreamHeadWritten(perTryDeadline: 3_000)
        #expect(exchange.tick(now: 2_999) == .none)
        #expect(exchange.tick(now: 3_000) == .perTryTimeout)
        try exchange.retrying()
        #expect(exchange.tick(now: 3_000) == .none)
        try exchange.upstreamHeadWritten(perTryDeadline: 6_000)
        #expect(exchange.tick(now: 10_000) == .totalTimeout)  // the total comes first when both passed
    }

    @Test func theTotalTimeoutOfASuspendedRequestNamesThePolicyHoldingIt() throws {
        var exchange = Machine(totalDeadline: 1_000)
        try exchange.suspend(by: .bearer)
        #expect(exchange.suspendedBy == .bearer)
        #expect(exchange.tick(now: 999) == .none)
        #expect(exchange.tick(now: 1_000) == .suspensionTimedOut(.bearer))
        try exchange.resume()
        try exchange.suspend(by: .admission)
        #expect(exchange.tick(now: 1_000) == .suspensionTimedOut(.admission))
    }

    @Test func aResponseUnderWayIsTruncatedByTheTotalTimeout() throws {
        var exchange = Machine(totalDeadline: 1_000)
        try exchange.requestEnd()
        try exchange.forwarded()
        try exchange.upstreamHeadWritten(perTryDeadline: 500)
        try exchange.responseHeadSent(switchingProtocols: false)
        #expect(exchange.responseHeadSent && exchange.requestEnded)
        #expect(exchange.tick(now: 600) == .none)  // per try only covers the wait for the head
        #expect(exchange.tick(now: 1_000) == .truncate)
    }

    @Test func switchingProtocolsLiftsEveryDeadline() throws {
        var exchange = Machine(totalDeadline: 1_000)
        try exchange.forwarded()
        try exchange.upstreamHeadWritten(perTryDeadline: 500)
        try exchange.responseHeadSent(switchingProtocols: true)
        #expect(exchange.response == .switchingProtocols)
        #expect(exchange.tick(now: .max - 1) == .none)
    }

    @Test func illegalTransitionsAreRefusedAndLeaveTheStateAsItWas() throws {
        var exchange = Machine(totalDeadline: 1_000)
        #expect(throws: ConnectionStateMachine.IllegalTransition.self) { try exchange.resume() }  // nothing suspended
        #expect(throws: ConnectionStateMachine.IllegalTransition.self) { try exchange.upstreamHeadWritten(perTryDeadline: 1) }
        #expect(throws: ConnectionStateMachine.IllegalTransition.self) { try exchange.responseHeadSent(switchingProtocols: false) }
        try exchange.suspend(by: .rateLimit)
        #expect(throws: ConnectionStateMachine.IllegalTransition.self) { try exchange.suspend(by: .admission) }
        #expect(throws: ConnectionStateMachine.IllegalTransition.self) { try exchange.forwarded() }  // still held
        #expect(exchange.response == .policies(suspendedBy: .rateLimit))
        try exchange.requestEnd()
        #expect(throws: ConnectionStateMachine.IllegalTransition.self) { try exchange.requestEnd() }
        #expect(exchange.request == .ended)
    }
}
