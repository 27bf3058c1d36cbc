import GatehouseTokens
import Testing

@testable import GatehouseAuthServer

@Suite struct KeyRingTests {
    let policy = KeyRing.Policy(publishLead: 310, retention: 3660, rotationPeriod: nil)

    func key(_ created: Int, activates: Int) throws -> ManagedKey {
        ManagedKey(key: try SigningKey.generate(.edDSA), createdAt: created, activatesAt: activates)
    }

    @Test func firstKeySignsAtOnce() throws {
        let ring = KeyRing(keys: [], policy: policy)
        #expect(ring.needsNewKey(at: 100))
        #expect(ring.activationTimeForNewKey(at: 100) == 100)
    }

    @Test func rotationPublishesBeforeSigningAndRetainsAfter() throws {
        let first = try key(0, activates: 0)
        var ring = KeyRing(keys: [first], policy: policy)
        #expect(!ring.needsNewKey(at: 1000))
        #expect(ring.activationTimeForNewKey(at: 1000) == 1310)
        let second = try key(1000, activates: 1310)
        ring.add(second)
        // Published at once, but the old key still signs until the lead has passed.
        #expect(ring.published(at: 1000).map(\.key.kid) == [first.key.kid, second.key.kid])
        #expect(ring.signingKey(at: 1309) == first)
        #expect(ring.signingKey(at: 1310) == second)
        // The old key stays published for the retention period after it stopped signing.
        #expect(ring.retiredAt(first, now: 2000) == 1310)
        #expect(ring.published(at: 1310 + 3659).contains(first))
        #expect(!ring.published(at: 1310 + 3660).contains(first))
        #expect(ring.expired(at: 1310 + 3660) == [first])
        #expect(ring.expired(at: 1310 + 3659).isEmpty)
    }

    @Test func noNewKeyWhileOneIsPending() throws {
        let ring = KeyRing(keys: [try key(0, activates: 0), try key(500, activates: 810)], policy: .init(rotationPeriod: 100))
        #expect(!ring.needsNewKey(at: 600))
        #expect(ring.needsNewKey(at: 810 + 100))
    }

    @Test func automaticRotationIsDueAfterThePeriod() throws {
        let ring = KeyRing(keys: [try key(0, activates: 0)], policy: .init(publishLead: 310, retention: 3660, rotationPeriod: 86400))
        #expect(!ring.needsNewKey(at: 86399))
        #expect(ring.needsNewKey(at: 86400))
    }

    @Test func aPendingKeyWithoutASignerIsNotReplaced() throws {
        // Keys exist but none signs yet (all pending): wait for them instead of adding more.
        let ring = KeyRing(keys: [try key(0, activates: 500)], policy: policy)
        #expect(!ring.needsNewKey(at: 100))
        #expect(ring.signingKey(at: 100) == nil)
    }
}
