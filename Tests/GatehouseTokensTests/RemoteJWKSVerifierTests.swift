import GatehouseTestSupport
import GatehouseTokens
import JWTKit
import NIOConcurrencyHelpers
import Testing

/// A JWKS server stand-in: counts fetches and serves whatever key set the test sets.
final class FakeJWKSEndpoint: Sendable {
    let document = NIOLockedValueBox("{\"keys\":[]}")
    let maxAge = NIOLockedValueBox<Double?>(300)
    let fetches = NIOLockedValueBox(0)
    /// Awaited by each fetch once it is counted (nil: the fetch answers at once). A test keeps a fetch in flight with
    /// it until the callers that should share that fetch have arrived, instead of guessing how long they take.
    let hold = NIOLockedValueBox<(@Sendable () async -> Void)?>(nil)

    func publish(_ keys: SigningKey...) {
        document.withLockedValue { $0 = "{\"keys\":[" + keys.map(\.publicJWK).joined(separator: ",") + "]}" }
    }

    func fetch() async throws -> (json: String, maxAge: Double?) {
        fetches.withLockedValue { $0 += 1 }
        if let hold = hold.withLockedValue({ $0 }) { await hold() }
        return (document.withLockedValue { $0 }, maxAge.withLockedValue { $0 })
    }
}

final class ManualSeconds: Sendable {
    let value = NIOLockedValueBox<Double>(1_800_000_000)
    /// How often the clock was read: a verifier reads it once when a call arrives, so tests can tell who has arrived.
    let reads = NIOLockedValueBox(0)
    func now() -> Double {
        reads.withLockedValue { $0 += 1 }
        return value.withLockedValue { $0 }
    }
    func advance(_ seconds: Double) { value.withLockedValue { $0 += seconds } }
}

@Suite struct RemoteJWKSVerifierTests {
    func sign(_ key: SigningKey, now: Int, aud: String = "api") async throws -> String {
        let keys = JWTKeyCollection()
        try await key.register(in: keys)
        var header = JWTHeader()
        header.typ = "at+jwt"
        let claims = AccessTokenClaims(iss: "https://auth.example", sub: "u", aud: [aud], exp: now + 600, iat: now, nbf: now, jti: "j", client_id: "c", scope: "orders:read", auth_time: nil)
        return try await keys.sign(claims, kid: JWKIdentifier(string: key.kid), header: header)
    }

    func makeVerifier(_ endpoint: FakeJWKSEndpoint, _ clock: ManualSeconds) -> RemoteJWKSVerifier {
        RemoteJWKSVerifier(
            verification: .init(issuers: ["https://auth.example"], audiences: ["api"]),
            policy: .init(minimumTTL: 60, maximumTTL: 3600, unknownKidInterval: 30),
            clock: { clock.now() }, fetcher: { try await endpoint.fetch() }
        )
    }

    @Test func fetchesOnceAndCachesForMaxAge() async throws {
        let endpoint = FakeJWKSEndpoint()
        let clock = ManualSeconds()
        let key = try SigningKey.generate(.es256)
        endpoint.publish(key)
        let verifier = makeVerifier(endpoint, clock)
        let token = try await sign(key, now: Int(clock.now()))
        for _ in 0..<10 { _ = try await verifier.verify(token) }
        #expect(endpoint.fetches.withLockedValue { $0 } == 1)
        clock.advance(299)
        _ = try await verifier.verify(token)
        #expect(endpoint.fetches.withLockedValue { $0 } == 1)
        clock.advance(2)  // past max-age 300
        _ = try await verifier.verify(try await sign(key, now: Int(clock.now())))
        #expect(endpoint.fetches.withLockedValue { $0 } == 2)
    }

    @Test func aBurstOfTokensWithANewKidMakesOneRequest() async throws {
        let endpoint = FakeJWKSEndpoint()
        let clock = ManualSeconds()
        let old = try SigningKey.generate(.es256)
        endpoint.publish(old)
        let verifier = makeVerifier(endpoint, clock)
        _ = try await verifier.verify(try await sign(old, now: Int(clock.now())))
        clock.advance(40)  // past the unknown-kid interval since the first fetch
        let rotated = try SigningKey.generate(.es256)
        endpoint.publish(old, rotated)
        let token = try await sign(rotated, now: Int(clock.now()))
        // Each call reads the clock once on arriving and then starts the fetch for the new kid (the first) or waits
        // for the one under way (the rest); nothing reads it again until that fetch returns. The fetch is held until
        // all 1,000 calls have read it, so every one of them arrived while it was in flight.
        let before = clock.reads.withLockedValue { $0 }
        let allArrived = NIOLockedValueBox(false)
        endpoint.hold.withLockedValue {
            $0 = {
                let arrived = await eventually { clock.reads.withLockedValue { $0 } - before >= 1000 }
                allArrived.withLockedValue { $0 = arrived }
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<1000 { group.addTask { _ = try await verifier.verify(token) } }
            try await group.waitForAll()
        }
        #expect(allArrived.withLockedValue { $0 }, "the 1,000 calls did not all arrive while the fetch was in flight")
        #expect(endpoint.fetches.withLockedValue { $0 } == 2)  // the first fetch and exactly one for the new kid
    }

    @Test func unknownKidsRefetchAtMostOncePerInterval() async throws {
        let endpoint = FakeJWKSEndpoint()
        let clock = ManualSeconds()
        let published = try SigningKey.generate(.es256)
        endpoint.publish(published)
        let verifier = makeVerifier(endpoint, clock)
        _ = try await verifier.verify(try await sign(published, now: Int(clock.now())))
        let stranger = try SigningKey.generate(.es256)
        clock.advance(31)
        for _ in 0..<20 {
            await #expect(throws: JOSEError(.unknownKey, "")) { _ = try await verifier.verify(try await sign(stranger, now: Int(clock.now()))) }
        }
        #expect(endpoint.fetches.withLockedValue { $0 } == 2)  // one refetch for the unknown kid, not twenty
        clock.advance(31)
        await #expect(throws: JOSEError.self) { _ = try await verifier.verify(try await sign(stranger, now: Int(clock.now()))) }
        #expect(endpoint.fetches.withLockedValue { $0 } == 3)
    }

    @Test func ttlIsBoundedBothWays() {
        let policy = JWKSRefreshPolicy(minimumTTL: 60, maximumTTL: 3600, unknownKidInterval: 30)
        #expect(policy.ttl(maxAge: 5) == 60)
        #expect(policy.ttl(maxAge: 86400 * 7) == 3600)
        #expect(policy.ttl(maxAge: 300) == 300)
        #expect(policy.ttl(maxAge: nil) == 60)
    }

    @Test func tamperedWrongAudienceAndAlgNoneAreRejected() async throws {
        let endpoint = FakeJWKSEndpoint()
        let clock = ManualSeconds()
        let key = try SigningKey.generate(.es256)
        endpoint.publish(key)
        let verifier = makeVerifier(endpoint, clock)
        let now = Int(clock.now())
        let good = try await sign(key, now: now)
        _ = try await verifier.verify(good)
        let parts = good.split(separator: ".")
        var claims = try await verifier.verify(good)
        claims.scope = "orders:read orders:write"
        let tampered = "\(parts[0]).\(Base64URL.encode(try JSONEncoder().encode(claims))).\(parts[2])"
        await #expect(throws: JOSEError(.badSignature, "")) { _ = try await verifier.verify(tampered) }
        await #expect(throws: JOSEError(.wrongAudience, "")) { _ = try await verifier.verify(try await sign(key, now: now, aud: "elsewhere")) }
        let none = Base64URL.encode(Array("{\"alg\":\"none\",\"kid\":\"\(key.kid)\",\"typ\":\"at+jwt\"}".utf8))
        await #expect(throws: JOSEError(.algorithmNotAllowed, "")) { _ = try await verifier.verify("\(none).\(parts[1]).") }
    }

    @Test func aFailedRefreshKeepsUsingTheCachedSet() async throws {
        let clock = ManualSeconds()
        let key = try SigningKey.generate(.es256)
        let endpoint = FakeJWKSEndpoint()
        endpoint.publish(key)
        let failing = NIOLockedValueBox(false)
        let failedFetches = NIOLockedValueBox(0)
        let verifier = RemoteJWKSVerifier(
            verification: .init(issuers: [], audiences: []), clock: { clock.now() },
            fetcher: {
                if failing.withLockedValue({ $0 }) {
                    failedFetches.withLockedValue { $0 += 1 }
                    throw JOSEError(.malformed, "down")
                }
                return try await endpoint.fetch()
            }
        )
        _ = try await verifier.verify(try await sign(key, now: Int(clock.now())))
        #expect(endpoint.fetches.withLockedValue { $0 } == 1)
        failing.withLockedValue { $0 = true }
        clock.advance(400)  // the cached set expired; the refresh fails
        let claims = try await verifier.verify(try await sign(key, now: Int(clock.now())))
        // The refresh was tried (and failed), and the token was checked against the key set cached before it.
        #expect(failedFetches.withLockedValue { $0 } >= 1)
        #expect(endpoint.fetches.withLockedValue { $0 } == 1)
        #expect(claims.sub == "u")
        #expect(claims.iat == Int(clock.now()))
    }

    @Test func aNewKidThatCannotBeFetchedIsNotCalledInvalid() async throws {
        let clock = ManualSeconds()
        let old = try SigningKey.generate(.es256)
        let new = try SigningKey.generate(.es256)
        let endpoint = FakeJWKSEndpoint()
        endpoint.publish(old)
        let failing = NIOLockedValueBox(false)
        let verifier = RemoteJWKSVerifier(
            verification: .init(issuers: [], audiences: []), policy: .init(minimumTTL: 3600, maximumTTL: 3600, unknownKidInterval: 30), clock: { clock.now() },
            fetcher: {
                if failing.withLockedValue({ $0 }) { throw JOSEError(.malformed, "down") }
                return try await endpoint.fetch()
            }
        )
        _ = try await verifier.verify(try await sign(old, now: Int(clock.now())))
        // The authorization server rotated to `new` and then became unreachable.
        endpoint.publish(old, new)
        failing.withLockedValue { $0 = true }
        clock.advance(60)
        let token = try await sign(new, now: Int(clock.now()))
        await #expect(throws: JOSEError(.keySetUnavailable, "")) { _ = try await verifier.verify(token) }
        clock.advance(1)  // within the unknown-kid interval: still unknowable, not invalid
        await #expect(throws: JOSEError(.keySetUnavailable, "")) { _ = try await verifier.verify(token) }
        // The old key keeps verifying meanwhile.
        _ = try await verifier.verify(try await sign(old, now: Int(clock.now())))
        // Back up, after the interval: the new kid is fetched and the token verifies.
        failing.withLockedValue { $0 = false }
        clock.advance(30)
        _ = try await verifier.verify(token)
        // A kid that the fresh set does not have either is the token's problem.
        clock.advance(31)
        await #expect(throws: JOSEError(.unknownKey, "")) { _ = try await verifier.verify(try await sign(try SigningKey.generate(.es256), now: Int(clock.now()))) }
    }
}

import Foundation
