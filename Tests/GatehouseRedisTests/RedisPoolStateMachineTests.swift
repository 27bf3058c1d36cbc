import NIOCore
import Testing

@testable import GatehouseRedis

/// The pool's slots without I/O: one connect per slot, backoff with jitter and cap, waiters, shutdown.
@Suite struct RedisPoolStateMachineTests {
    final class Connection {}
    typealias Machine = RedisPoolStateMachine<Connection, Int>

    func connects(_ actions: [Machine.Action]) -> [Int] {
        actions.compactMap { if case .connect(let slot) = $0 { return slot } else { return nil } }
    }

    @Test func startConnectsEverySlotOnceAndCommandsWaitForTheFirst() {
        var machine = Machine(size: 2, initialBackoff: .milliseconds(50), maximumBackoff: .seconds(2))
        #expect(connects(machine.start()) == [0, 1])
        #expect(connects(machine.start()).isEmpty, "a slot already connecting is not asked again")
        guard case .wait(let waiter) = machine.acquire(preferred: { _ in true }, makeWaiter: { 7 }) else {
            Issue.record("expected to wait for the connect in flight")
            return
        }
        #expect(waiter == 7)
        let connection = Connection()
        guard case .succeedWaiters(let waiters, let handed)? = machine.connected(slot: 1, connection) else {
            Issue.record("the waiter was not served")
            return
        }
        #expect(waiters == [7] && handed === connection)
        guard case .use(let used) = machine.acquire(preferred: { _ in false }, makeWaiter: { 0 }) else {
            Issue.record("a ready connection was not used")
            return
        }
        #expect(used === connection)
    }

    @Test func consecutiveFailuresCountUntilTheSlotConnects() {
        // What the client's log level follows: the first failure of an outage is a warning, its retries are not.
        var machine = Machine(size: 1, initialBackoff: .milliseconds(50), maximumBackoff: .seconds(2))
        _ = machine.start()
        _ = machine.connectFailed(slot: 0, jitter: 0)
        #expect(machine.consecutiveFailures(slot: 0) == 1)
        _ = machine.backoffElapsed(slot: 0)
        _ = machine.connectFailed(slot: 0, jitter: 0)
        #expect(machine.consecutiveFailures(slot: 0) == 2)
        _ = machine.backoffElapsed(slot: 0)
        _ = machine.connected(slot: 0, Connection())
        #expect(machine.consecutiveFailures(slot: 0) == 0)
    }

    @Test func failuresBackOffExponentiallyWithJitterUpToTheCap() {
        let machine = Machine(size: 1, initialBackoff: .milliseconds(50), maximumBackoff: .seconds(2))
        #expect(machine.backoff(failures: 1, jitter: 0) == .milliseconds(25))
        #expect(machine.backoff(failures: 1, jitter: 1) == .milliseconds(50))
        #expect(machine.backoff(failures: 3, jitter: 1) == .milliseconds(200))
        #expect(machine.backoff(failures: 3, jitter: 0.5) == .milliseconds(150))
        #expect(machine.backoff(failures: 20, jitter: 1) == .seconds(2))
        #expect(machine.backoff(failures: 200, jitter: 0) == .seconds(1))
    }

    @Test func anOutageFailsFastThenTheSlotReconnectsAfterItsBackoff() {
        var machine = Machine(size: 1, initialBackoff: .milliseconds(50), maximumBackoff: .seconds(2))
        _ = machine.start()
        let first = Connection()
        _ = machine.connected(slot: 0, first)
        // The connection closes: reconnect at once, and commands wait for that attempt.
        guard case .connect(0)? = machine.connectionClosed(slot: 0, first) else {
            Issue.record("a closed connection is reconnected at once")
            return
        }
        #expect(machine.connectionClosed(slot: 0, first) == nil, "a second close of the same connection changes nothing")
        guard case .wait = machine.acquire(preferred: { _ in true }, makeWaiter: { 1 }) else {
            Issue.record("expected to wait")
            return
        }
        // The attempt fails: backoff scheduled, the waiter failed, later commands fail at once.
        let actions = machine.connectFailed(slot: 0, jitter: 1)
        #expect(actions.contains { if case .scheduleReconnect(0, .milliseconds(50)) = $0 { return true } else { return false } })
        #expect(actions.contains { if case .failWaiters([1]) = $0 { return true } else { return false } })
        guard case .unavailable = machine.acquire(preferred: { _ in true }, makeWaiter: { 2 }) else {
            Issue.record("a command during backoff must fail at once")
            return
        }
        #expect(machine.backoffElapsed(slot: 0).map { if case .connect(0) = $0 { return true } else { return false } } == true)
        #expect(machine.backoffElapsed(slot: 0) == nil, "only one connect attempt in flight per slot")
        // The second consecutive failure waits twice as long.
        #expect(machine.connectFailed(slot: 0, jitter: 1).contains { if case .scheduleReconnect(0, .milliseconds(100)) = $0 { return true } else { return false } })
    }

    @Test func shutdownClosesReadyConnectionsAndLateConnectsAreClosed() {
        var machine = Machine(size: 2, initialBackoff: .milliseconds(50), maximumBackoff: .seconds(2))
        _ = machine.start()
        let ready = Connection()
        _ = machine.connected(slot: 0, ready)
        let actions = machine.shutdown()
        #expect(actions.contains { if case .close(let list) = $0 { return list.count == 1 && list[0] === ready } else { return false } })
        let late = Connection()
        guard case .close(let closed)? = machine.connected(slot: 1, late) else {
            Issue.record("a connect finishing after shutdown must be closed")
            return
        }
        #expect(closed.count == 1 && closed[0] === late)
        guard case .shutDown = machine.acquire(preferred: { _ in true }, makeWaiter: { 0 }) else {
            Issue.record("expected shutDown")
            return
        }
    }
}

