import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import NIOConcurrencyHelpers
import Testing

@testable import GatehouseAuthServer

/// The login throttle with its counters in a store that servers share (PostgreSQL in production; here an
/// in-memory `LoginThrottleStore` whose updates are atomic under a lock, and which can be switched "down").
@Suite struct SharedLoginThrottleTests {
    static let web = ("demo-web", "demo-web-secret")

    func passwordGrant(_ client: any TestClientProtocol, password: String) async throws -> Reply {
        try await client.token([("grant_type", "password"), ("username", "alice"), ("password", password)], basic: Self.web)
    }

    /// Two servers sharing the counters: failures at either count together, so the delay starts after
    /// `max_failures_before_delay` (5) failures in total, not 5 per server; the store holds only key hashes.
    @Test func failuresAtTwoServersCountTogether() async throws {
        let shared = MemoryThrottleStore()
        try await withAuthServer(loginThrottle: shared) { first, _, _ in
            try await withAuthServer(loginThrottle: shared) { second, _, _ in
                for attempt in 0..<5 {
                    let reply = try await passwordGrant(attempt % 2 == 0 ? first : second, password: "wrong-\(attempt)")
                    #expect(reply.string("error_description") == "the username or password is wrong", "attempt \(attempt): \(reply.text)")
                    #expect(reply.headers[.retryAfter] == nil)
                }
                // Three failures at the first server, two at the second: each alone is under 5, together they are 5.
                for server in [first, second] {
                    let held = try await passwordGrant(server, password: "alice-password")
                    #expect(held.status == .badRequest, "\(held.text)")
                    #expect(held.headers[.retryAfter] != nil, "the sixth attempt, even with the right password, waits")
                }
            }
        }
        let keys = shared.keys
        #expect(keys.count == 2)  // the username's and the address's
        #expect(keys.contains(SecureToken.hash("user:alice")) && keys.contains(SecureToken.hash("ip:127.0.0.1")))
        #expect(!keys.contains { $0.contains("alice") || $0.contains("127.0.0.1") })
    }

    /// A success clears the username's count at every server (the shared row), not the address's.
    @Test func aSuccessAtOneServerClearsTheUsernameForBoth() async throws {
        let shared = MemoryThrottleStore()
        try await withAuthServer(loginThrottle: shared) { first, _, _ in
            try await withAuthServer(loginThrottle: shared) { second, _, _ in
                for attempt in 0..<3 { _ = try await passwordGrant(first, password: "wrong-\(attempt)") }
                #expect(shared.record(SecureToken.hash("user:alice"))?.failures == 3)
                #expect(try await passwordGrant(second, password: "alice-password").status == .ok)
                #expect(shared.record(SecureToken.hash("user:alice")) == nil)
                #expect(shared.record(SecureToken.hash("ip:127.0.0.1"))?.failures == 3)
            }
        }
    }

    /// The shared counters unreachable: the password grant answers 503 `temporarily_unavailable` with
    /// `Retry-After` and the sign-in page 503 with `Retry-After` — never a 500, and never the guess evaluated
    /// unthrottled (the right password is refused too). Back up, the same request succeeds.
    @Test func anUnreachableThrottleStoreRefusesSignInWith503() async throws {
        let shared = MemoryThrottleStore()
        try await withAuthServer(loginThrottle: shared) { client, _, _ in
            // The sign-in page's form, fetched while the store is up.
            let start = try await client.send(.get, "/authorize?" + FormParameters.encode([
                ("response_type", "code"), ("client_id", "demo-spa"), ("redirect_uri", "http://127.0.0.1:8081/spa/callback"),
                ("scope", "orders:read"), ("state", "s"), ("code_challenge", challenge), ("code_challenge_method", "S256"),
            ]))
            let session = try #require(start.cookie(AuthorizationServer.sessionCookie))
            let page = try await client.send(.get, try #require(start.location), cookie: session)
            let form = [("csrf_token", try #require(page.hidden("csrf_token"))), ("request", try #require(page.hidden("request"))), ("username", "alice"), ("password", "alice-password")]

            shared.down(true)
            let grant = try await passwordGrant(client, password: "alice-password")
            #expect(grant.status == .serviceUnavailable, "\(grant.text)")
            #expect(grant.string("error") == "temporarily_unavailable")
            #expect(grant.headers[.retryAfter] == String(OAuthError.storeUnavailableRetryAfter))
            let login = try await client.send(.post, "/login", form: form, cookie: session)
            #expect(login.status == .serviceUnavailable, "\(login.text)")
            #expect(login.headers[.retryAfter] == String(OAuthError.storeUnavailableRetryAfter))
            #expect(login.headers[.contentType]?.hasPrefix("text/html") == true)
            #expect(login.location == nil)
            #expect(shared.refusedCalls >= 2)

            shared.down(false)
            #expect(try await passwordGrant(client, password: "alice-password").status == .ok)
            let signedIn = try await client.send(.post, "/login", form: form, cookie: session)
            #expect(signedIn.status == .seeOther, "\(signedIn.text)")
        }
    }
}

extension SharedLoginThrottleTests {
    /// A reservation never settled (a replica that stopped mid-sign-in, its counters in the shared database) counts
    /// as a failure while it may still be settled, and not for good: after a window it no longer holds the key back.
    @Test func aReservationNeverSettledStopsCountingAfterAWindow() {
        var throttle = LoginThrottle(policy: .init(maxFailuresBeforeDelay: 2, baseDelay: 1, maxDelay: 60, failureWindow: 900))
        #expect(throttle.reserve(["k"], now: 100) == nil)
        #expect(throttle.reserve(["k"], now: 100) == nil)
        #expect(throttle.retryAfter("k", now: 100) == 1)
        #expect(throttle.retryAfter("k", now: 999) == nil)  // the delay itself ran out
        #expect(throttle.reserve(["k"], now: 1000) == nil)  // a window later: the two stale reservations are gone
        #expect(throttle.entries["k"]?.pending == 1)
        // A second attempt at once is still free (counting the stale two, it would wait 2 s).
        #expect(throttle.reserve(["k"], now: 1000) == nil)
        #expect(throttle.entries["k"]?.pending == 2)
    }
}

/// A `LoginThrottleStore` in memory: each update runs under one lock (as PostgreSQL runs it under the rows' locks).
final class MemoryThrottleStore: LoginThrottleStore {
    private let state = NIOLockedValueBox((rows: [String: LoginThrottleRecord](), down: false, refused: 0))

    var keys: Set<String> { state.withLockedValue { Set($0.rows.keys) } }
    var refusedCalls: Int { state.withLockedValue { $0.refused } }
    func record(_ keyHash: String) -> LoginThrottleRecord? { state.withLockedValue { $0.rows[keyHash] } }
    func down(_ down: Bool) { state.withLockedValue { $0.down = down } }

    func updateLoginThrottle<T: Sendable>(
        keyHashes: [String], _ transition: @escaping @Sendable ([String: LoginThrottleRecord]) -> (answer: T, entries: [String: LoginThrottleRecord])
    ) async throws -> T {
        try state.withLockedValue { state in
            if state.down {
                state.refused += 1
                throw StoreError(code: .unavailable, message: "PostgreSQL unreachable (test)")
            }
            let (answer, entries) = transition(state.rows.filter { keyHashes.contains($0.key) })
            for key in keyHashes { state.rows[key] = entries[key] }
            return answer
        }
    }

    func purgeLoginThrottle(idleBefore cutoff: Int) async throws -> Int {
        state.withLockedValue { state in
            let before = state.rows.count
            state.rows = state.rows.filter { max($0.value.lastFailure, $0.value.lastReserved) >= cutoff }
            return before - state.rows.count
        }
    }
}
