import Foundation
import GatehouseTokens
import Logging
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

    /// Replicas sharing one key directory, a rotation due on all of them at once: exactly one key is created, and
    /// every replica publishes it (it signs only after the publish lead).
    @Test func replicasSharingADirectoryCreateOneKeyPerRotation() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gatehouse-keys-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ManualClock()
        let policy = KeyRing.Policy(publishLead: 20, retention: 100, rotationPeriod: 60)
        let replicas = (0..<6).map { _ in
            KeyManager(directory: KeyDirectory(path: path), algorithm: .es256, policy: policy, clock: clock, logger: Logger(label: "test"))
        }
        // No key yet: the first one is due on every replica at once.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for replica in replicas { group.addTask { try await replica.reload() } }
            try await group.waitForAll()
        }
        let first = try KeyDirectory(path: path).load()
        #expect(first.count == 1)
        #expect(Set(replicas.map(\.signingKid)) == [first[0].key.kid])
        // The rotation period passes: again exactly one successor, published by all, signing by none yet.
        clock.advance(60)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for replica in replicas { group.addTask { try await replica.reload() } }
            try await group.waitForAll()
        }
        let second = try KeyDirectory(path: path).load()
        #expect(second.count == 2)
        let next = try #require(second.first { $0.key.kid != first[0].key.kid })
        #expect(next.activatesAt == clock.now() + policy.publishLead)
        for replica in replicas {
            #expect(replica.jwks.contains(next.key.kid))
            #expect(replica.signingKid == first[0].key.kid)
        }
        // After the lead every replica signs with the new key, and nobody created another.
        clock.advance(policy.publishLead)
        for replica in replicas { try await replica.reload() }
        #expect(Set(replicas.map(\.signingKid)) == [next.key.kid])
        #expect(try KeyDirectory(path: path).load().count == 2)
    }
}
