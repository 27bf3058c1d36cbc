import Foundation
import GatehouseTestSupport
import HTTPTypes
import HummingbirdBcrypt
import NIOConcurrencyHelpers
import NIOPosix
import Testing

@testable import GatehouseAuthServer

/// bcrypt that counts its verifications and holds each one until the test opens the gate: the test decides how
/// long hashing takes, so it can see which attempts reached the hash while others were still in flight.
final class GatedPasswordAlgorithm: PasswordAlgorithm {
    private let gate = ConditionLock(value: false)
    private let counts = NIOLockedValueBox((started: 0, finished: 0))
    private let bcrypt = BcryptAlgorithm()

    func hash(_ password: String, cost: Int) -> String { bcrypt.hash(password, cost: cost) }

    func verify(_ password: String, hash: String) -> Bool {
        counts.withLockedValue { $0.started += 1 }
        gate.lock(whenValue: true)
        gate.unlock()
        defer { counts.withLockedValue { $0.finished += 1 } }
        return bcrypt.verify(password, hash: hash)
    }

    func open() {
        gate.lock()
        gate.unlock(withValue: true)
    }

    var started: Int { counts.withLockedValue { $0.started } }
}

/// A hashing pool of one thread for one test, so that holding its thread blocks no other test; shut down after.
func withHashingPool(_ body: (NIOThreadPool) async throws -> Void) async throws {
    let pool = NIOThreadPool(numberOfThreads: 1)
    pool.start()
    do {
        try await body(pool)
    } catch {
        try? await pool.shutdownGracefully()
        throw error
    }
    try await pool.shutdownGracefully()
}

@Suite struct PasswordHashingTests {
    static let web = ("demo-web", "demo-web-secret")

    /// 12 wrong passwords for one user at once with a throttle that allows 5: 5 are hashed, 7 are refused with
    /// Retry-After before any hash (before, all 12 passed the check and were hashed).
    @Test func concurrentWrongPasswordsForOneUserEvaluateAtMostTheThrottleLimit() async throws {
        let algorithm = GatedPasswordAlgorithm()
        try await withHashingPool { pool in
            try await withAuthServer(configure: { $0.login.hashingQueue = 100; $0.login.hashingThreads = 1 }, passwordAlgorithm: algorithm, passwordHashingPool: pool) { client, _, _ in
                let connections = client.perRequestConnections
                let replies = NIOLockedValueBox([Reply]())
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<12 {
                        group.addTask {
                            let reply = try await connections.token([("grant_type", "password"), ("username", "alice"), ("password", "guess-\(index)")], basic: Self.web)
                            replies.withLockedValue { $0.append(reply) }
                        }
                    }
                    // The throttled ones answer while the admitted ones wait for the hash.
                    let sevenRefused = await eventually { replies.withLockedValue { $0.count } >= 7 }
                    algorithm.open()
                    try await group.waitForAll()
                    #expect(sevenRefused)
                }
                let all = replies.withLockedValue { $0 }
                #expect(all.count == 12)
                #expect(algorithm.started == 5)
                let throttled = all.filter { $0.headers[.retryAfter] != nil }
                #expect(throttled.count == 7)
                #expect(throttled.allSatisfy { $0.string("error") == "invalid_grant" })
                #expect(all.filter { $0.string("error_description") == "the username or password is wrong" }.count == 5)
            }
        }
    }

    /// One thread, a queue of 2: the 4th concurrent sign-in is refused at once with 503, `temporarily_unavailable`
    /// and Retry-After (the password grant) or a 503 page with Retry-After (the login page); it is not counted as
    /// a failed attempt. Meanwhile tokens are still issued: hashing does not hold the threads SQLite runs on.
    @Test func aFullHashingQueueRefusesWithRetryAfterAndTokenIssuanceGoesOn() async throws {
        let algorithm = GatedPasswordAlgorithm()
        try await withHashingPool { pool in
            let server = NIOLockedValueBox<AuthorizationServer?>(nil)
            try await withAuthServer(
                configure: { $0.login.hashingQueue = 2; $0.login.hashingThreads = 1 }, passwordAlgorithm: algorithm, passwordHashingPool: pool,
                inspect: { instance in server.withLockedValue { $0 = instance } }
            ) { client, _, _ in
                let connections = client.perRequestConnections
                let hasher = try #require(server.withLockedValue { $0 }).passwords
                try await withThrowingTaskGroup(of: Reply.self) { group in
                    for user in ["alice", "bob", "carol"] {
                        group.addTask { try await connections.token([("grant_type", "password"), ("username", user), ("password", "x")], basic: Self.web) }
                    }
                    // One hash running (held at the gate), two queued.
                    let held = await eventually { algorithm.started == 1 && hasher.inFlight == 3 }
                    let refused = try await connections.token([("grant_type", "password"), ("username", "erin"), ("password", "x")], basic: Self.web)
                    // Token issuance while every hashing thread is held.
                    let issued = try await connections.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
                    algorithm.open()
                    for try await reply in group { #expect(reply.string("error") == "invalid_grant") }
                    #expect(held)
                    #expect(refused.status == .serviceUnavailable)
                    #expect(refused.string("error") == "temporarily_unavailable")
                    #expect(Int(refused.headers[.retryAfter] ?? "") ?? 0 >= 1)
                    #expect(issued.status == .ok, "\(issued.text)")
                }
                #expect(algorithm.started == 3)
            }
        }
    }

    @Test func aFullHashingQueueShowsTheLoginPageWith503AndRetryAfter() async throws {
        let algorithm = GatedPasswordAlgorithm()
        try await withHashingPool { pool in
            try await withAuthServer(configure: { $0.login.hashingQueue = 0; $0.login.hashingThreads = 1 }, passwordAlgorithm: algorithm, passwordHashingPool: pool) { client, _, _ in
                let connections = client.perRequestConnections
                let start = try await client.send(.get, AuthorizationFlowTests().authorizeURL())
                let session = try #require(start.cookie(AuthorizationServer.sessionCookie))
                let page = try await client.send(.get, start.location ?? "", cookie: session)
                let form = [("csrf_token", page.hidden("csrf_token") ?? ""), ("request", page.hidden("request") ?? ""), ("username", "alice"), ("password", "alice-password")]
                try await withThrowingTaskGroup(of: Reply.self) { group in
                    group.addTask { try await connections.token([("grant_type", "password"), ("username", "bob"), ("password", "x")], basic: Self.web) }
                    let held = await eventually { algorithm.started == 1 }
                    let busy = try await connections.send(.post, "/login", form: form, cookie: session)
                    algorithm.open()
                    try await group.waitForAll()
                    #expect(held)
                    #expect(busy.status == .serviceUnavailable)
                    #expect(busy.headers[.retryAfter] != nil)
                    #expect(busy.headers[.contentType]?.hasPrefix("text/html") == true)
                    #expect(busy.text.contains("id=\"login-error\""))
                    #expect(!busy.text.contains("alice-password"))
                }
                // Not counted as a failure, and the same form works once the queue has room.
                let login = try await client.send(.post, "/login", form: form, cookie: session)
                #expect(login.status == .seeOther, "\(login.text)")
            }
        }
    }

    /// By default hashing runs on a process-wide pool of its own, one per size, never on the pool SQLite uses.
    @Test func theDefaultHashingPoolIsNotTheSharedOne() {
        let one = PasswordHasher(cost: 4, threads: 1)
        let again = PasswordHasher(cost: 4, threads: 1)
        let two = PasswordHasher(cost: 4, threads: 2)
        #expect(one.pool !== NIOThreadPool.singleton)
        #expect(two.pool !== NIOThreadPool.singleton)
        #expect(one.pool === again.pool)
        #expect(one.pool !== two.pool)
    }

    /// The decoy verified for unknown usernames costs what a user's hash costs (before: always cost 10).
    @Test(arguments: [6, 11])
    func decoyHashHasTheConfiguredCost(cost: Int) async throws {
        let hasher = PasswordHasher(cost: cost)
        let decoy = try await hasher.decoyHash()
        let fields = decoy.split(separator: "$")
        #expect(fields.count >= 3)
        #expect(Int(fields[1]) == cost, "\(decoy.prefix(7))")
        #expect(try await hasher.decoyHash() == decoy)  // made once
        #expect(try await hasher.verifyDecoy(PasswordHasher.decoyPassword) == false)
    }
}
