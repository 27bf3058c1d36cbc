import GatehouseConfiguration
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import GatehouseGateway

/// The upstream pool on a real event loop: connect backoff against a port that refuses, waiter cancellation and
/// the configured queue limit against a port that accepts.
@Suite struct UpstreamPoolTests {
    /// A TCP port bound but not listening: every connect is refused, and nothing else can take the port; after
    /// `listen()` the kernel completes connects to it.
    final class RefusingPort {
        let descriptor: Int32
        let port: Int

        init() throws {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
            }
            guard descriptor >= 0, bound else {
                _ = Glibc.close(descriptor)
                throw SocketAddressError.unsupported
            }
            self.descriptor = descriptor
            port = Int(UInt16(bigEndian: address.sin_port))
        }

        private var open = true

        func listen() { _ = Glibc.listen(descriptor, 16) }

        /// Closes the socket: connects are refused again (nothing else is expected to take the port meanwhile).
        func close() {
            guard open else { return }
            open = false
            _ = Glibc.close(descriptor)
        }

        deinit { close() }
    }

    /// A clock the test moves.
    final class ManualClock: Sendable {
        private let value = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        var now: NIODeadline { value.withLockedValue { $0 } }
        func advance(_ amount: TimeAmount) { value.withLockedValue { $0 = $0 + amount } }
    }

    static let limits = UpstreamPool.Limits(maxConnections: 4, maxIdle: 4, idleTimeout: .seconds(60), connectTimeout: .seconds(5))

    /// Acquires on the pool's loop and waits; nil when a connection came (it is closed again), else the error.
    static func acquireError(_ pool: NIOLoopBound<UpstreamPool>, _ target: TargetKey) async -> UpstreamError? {
        let future = pool.eventLoop.flatSubmit {
            pool.value.acquire(target, limits: limits).map { connection -> UpstreamError? in
                connection.channel.close(promise: nil)
                return nil
            }
        }
        do { return try await future.get() } catch { return error as? UpstreamError ?? .connectionClosed }
    }

    @Test func backoffDoublesUpToItsMaximum() {
        #expect(ConnectBackoff.delay(afterFailures: 1) == .milliseconds(50))
        #expect(ConnectBackoff.delay(afterFailures: 2) == .milliseconds(100))
        #expect(ConnectBackoff.delay(afterFailures: 6) == .milliseconds(1600))
        #expect(ConnectBackoff.delay(afterFailures: 7) == .seconds(2))
        #expect(ConnectBackoff.delay(afterFailures: 1000) == .seconds(2))
        var backoff = ConnectBackoff()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        backoff.recordFailure(now: start)
        backoff.recordFailure(now: start)
        #expect(backoff.failures == 2)
        #expect(backoff.retryAt == start + .milliseconds(100))
    }

    /// After a refused connect, a request that needs a new connection fails at once (no connect) until the
    /// backoff has passed; then one connect is tried, and its failure doubles the backoff.
    @Test(.timeLimit(.minutes(1))) func aRefusedConnectBacksOff() async throws {
        let refusing = try RefusingPort()
        let target = TargetKey(host: "127.0.0.1", port: refusing.port)
        let clock = ManualClock()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let pool = try await loop.submit { NIOLoopBound(UpstreamPool(eventLoop: loop, now: { clock.now }), eventLoop: loop) }.get()

        guard case .connectFailed = await Self.acquireError(pool, target) else { Issue.record("the first connect was not tried"); return }
        #expect(await Self.acquireError(pool, target) == .connectBackoff)
        clock.advance(.milliseconds(49))
        #expect(await Self.acquireError(pool, target) == .connectBackoff)
        clock.advance(.milliseconds(2))
        guard case .connectFailed = await Self.acquireError(pool, target) else { Issue.record("no connect after the backoff"); return }
        clock.advance(.milliseconds(99))
        #expect(await Self.acquireError(pool, target) == .connectBackoff)  // 100 ms after the second failure
        clock.advance(.milliseconds(2))
        guard case .connectFailed = await Self.acquireError(pool, target) else { Issue.record("no connect after the backoff"); return }
        // The failures left nothing open.
        #expect(try await loop.submit { pool.value.openConnections(target) }.get() == 0)

    }

    /// A success forgets earlier failures: after it, one failure backs off for the initial 50 ms only.
    @Test(.timeLimit(.minutes(1))) func aSuccessfulConnectResetsTheBackoff() async throws {
        let refusing = try RefusingPort()
        let target = TargetKey(host: "127.0.0.1", port: refusing.port)
        let clock = ManualClock()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let pool = try await loop.submit { NIOLoopBound(UpstreamPool(eventLoop: loop, now: { clock.now }), eventLoop: loop) }.get()
        for _ in 0..<3 {
            guard case .connectFailed = await Self.acquireError(pool, target) else { Issue.record("no connect was tried"); return }
            clock.advance(.seconds(3))  // past any backoff
        }
        refusing.listen()
        #expect(await Self.acquireError(pool, target) == nil)
        refusing.close()
        guard case .connectFailed = await Self.acquireError(pool, target) else { Issue.record("the closed port did not refuse"); return }
        clock.advance(.milliseconds(51))
        // Without the reset this would be the fifth failure in a row, backing off 800 ms.
        guard case .connectFailed = await Self.acquireError(pool, target) else { Issue.record("still backing off after 50 ms"); return }
    }

    /// With the one connection leased and a queue of one, a second waiter is refused; cancelling the first frees
    /// its place at once (it fails with `waiterCancelled`), and the next released connection goes to the new one.
    @Test(.timeLimit(.minutes(1))) func aCancelledWaiterGivesUpItsPlace() async throws {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let target = TargetKey(host: "127.0.0.1", port: listener.localAddress!.port!)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let limits = UpstreamPool.Limits(maxConnections: 1, maxIdle: 1, idleTimeout: .seconds(60), connectTimeout: .seconds(5), maxPending: 1)
        let (pool, leased) = try await loop.submit {
            (NIOLoopBound(UpstreamPool(eventLoop: loop), eventLoop: loop), NIOLoopBoundBox<UpstreamConnection?>(nil, eventLoop: loop))
        }.get()
        let first = ObjectIdentifier(Int.self), second = ObjectIdentifier(String.self)

        let leasedID = try await loop.flatSubmit {
            pool.value.acquire(target, limits: limits).map { connection in
                leased.value = connection
                return ObjectIdentifier(connection)
            }
        }.get()
        let (waiter, refused) = try await loop.submit {
            (pool.value.acquire(target, limits: limits, for: first).map { ObjectIdentifier($0) }, pool.value.acquire(target, limits: limits, for: second).map { ObjectIdentifier($0) })
        }.get()
        await #expect(throws: UpstreamError.poolExhausted) { try await refused.get() }
        #expect(try await loop.submit { pool.value.cancelWaiting(first, target: target) }.get())
        await #expect(throws: UpstreamError.waiterCancelled) { try await waiter.get() }
        #expect(try await loop.submit { pool.value.waitingCount(target) }.get() == 0)
        let next = try await loop.submit { pool.value.acquire(target, limits: limits, for: second).map { ObjectIdentifier($0) } }.get()
        try await loop.submit { pool.value.release(leased.value!, limits: limits) }.get()
        #expect(try await next.get() == leasedID)
        #expect(try await loop.submit { pool.value.cancelWaiting(second, target: target) }.get() == false)
        try await loop.submit { leased.value?.channel.close(promise: nil) }.get()
        try await listener.close()
    }

    @Test func maxPendingIsConfigured() throws {
        let configuration = try GatewayConfiguration.parse(yaml: """
            listeners: [{port: 8080}]
            clusters:
              - {name: a, targets: ['http://127.0.0.1:9'], pool: {max_pending: 2}}
              - {name: b, targets: ['http://127.0.0.1:9']}
            routes:
              - {match: {path_prefix: /}, cluster: a}
            """)
        let gateway = GatewayCompiler().compile(configuration)
        #expect(gateway.clusters.map(\.poolLimits.limits.maxPending) == [2, 4096])
    }
}
