import GatehouseConfiguration
import GatehouseTokens
import JWTKit
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import ServiceLifecycle

/// The authorization server's signing keys at run time: follows the key directory (new files from
/// `gatehouse keys rotate`, automatic rotation, deletion of expired keys) and signs with the current key.
public final class KeyManager: Sendable {
    struct Snapshot: Sendable {
        var ring: KeyRing
        var keys: JWTKeyCollection
        /// Each key's jwt-kit signer, taken out of the (actor) key collection once, so signing needs no hop.
        var signers: [String: any JWTAlgorithm]
        var jwks: String
        var publishedKids: [String]
        /// Verifies JWTs against the published keys (current, pending and retired within retention).
        var verifier: JWTVerifier
    }

    let directory: KeyDirectory
    let algorithm: SigningAlgorithm
    let policy: KeyRing.Policy
    let clock: any AuthClock
    let logger: Logger
    private let snapshot: NIOLockedValueBox<Snapshot?> = NIOLockedValueBox(nil)

    public init(directory: KeyDirectory, algorithm: SigningAlgorithm, policy: KeyRing.Policy, clock: any AuthClock, logger: Logger) {
        self.directory = directory
        self.algorithm = algorithm
        self.policy = policy
        self.clock = clock
        self.logger = logger
    }

    /// Reads the key directory (off the event loop), creates a key when one is due, deletes expired ones, and
    /// swaps in the new key set if anything changed.
    public func reload() async throws {
        let now = clock.now()
        let directory = self.directory
        let algorithm = self.algorithm
        let policy = self.policy
        let (ring, created, deleted) = try await NIOThreadPool.singleton.runIfActive { () throws -> (KeyRing, [String], [String]) in
            var ring = KeyRing(keys: try directory.load(), policy: policy)
            var created: [String] = []
            if ring.needsNewKey(at: now) {
                // Replicas sharing the directory may all find a key due at once: the decision is taken again under
                // the directory's lock, after re-reading it, so exactly one of them creates the key and the others
                // find it (and publish it) there. The lock is taken only when a key looks due, not on every rescan.
                ring = try directory.withCreationLock {
                    var locked = KeyRing(keys: try directory.load(), policy: policy)
                    if locked.needsNewKey(at: now) {
                        let key = ManagedKey(key: try SigningKey.generate(algorithm), createdAt: now, activatesAt: locked.activationTimeForNewKey(at: now))
                        try directory.save(key)
                        locked.add(key)
                        created.append(key.key.kid)
                    }
                    return locked
                }
            }
            let expired = ring.expired(at: now).map(\.key.kid)
            for kid in expired {
                directory.delete(kid: kid)
                ring.remove(kid: kid)
            }
            return (ring, created, expired)
        }
        for kid in created { logger.notice("signing key created", metadata: ["kid": "\(kid)"]) }
        for kid in deleted { logger.notice("retired signing key deleted", metadata: ["kid": "\(kid)"]) }
        let publishedKids = ring.published(at: now).map(\.key.kid)
        if let current = snapshot.withLockedValue({ $0 }), current.ring == ring, current.publishedKids == publishedKids { return }
        let keys = JWTKeyCollection()
        var signers: [String: any JWTAlgorithm] = [:]
        for managed in ring.keys {
            try await managed.key.register(in: keys)
            signers[managed.key.kid] = try await keys.getKey(for: JWKIdentifier(string: managed.key.kid))
        }
        let jwks = "{\"keys\":[" + ring.published(at: now).map(\.key.publicJWK).joined(separator: ",") + "]}"
        let verifier = try await JWTVerifier(jwksJSON: jwks)
        snapshot.withLockedValue { $0 = Snapshot(ring: ring, keys: keys, signers: signers, jwks: jwks, publishedKids: publishedKids, verifier: verifier) }
    }

    /// The JWKS document (pending, current and retained keys).
    public var jwks: String {
        snapshot.withLockedValue { $0?.jwks } ?? "{\"keys\":[]}"
    }

    /// The kid that signs now.
    public var signingKid: String? {
        let now = clock.now()
        return snapshot.withLockedValue { $0?.ring.signingKey(at: now)?.key.kid }
    }

    public var signingAlgorithms: [String] { [algorithm.rawValue] }

    /// Signs a payload with the current key, with header `typ` (and `alg`, `kid`): jwt-kit's signer and JSON
    /// encoder, called directly, so that an event loop can sign (an ES256 signature is tens of microseconds).
    public func sign(_ payload: some JWTPayload, type: String) throws -> String {
        let now = clock.now()
        let current = snapshot.withLockedValue { snapshot -> (any JWTAlgorithm, String)? in
            guard let snapshot, let key = snapshot.ring.signingKey(at: now), let signer = snapshot.signers[key.key.kid] else { return nil }
            return (signer, key.key.kid)
        }
        guard let (signer, kid) = current else { throw JOSEError(.unknownKey, "no signing key is active") }
        // The header and the server's own claim types are written directly (Foundation's JSONEncoder cost as much as
        // the ES256 signature); any other payload goes through jwt-kit's encoder.
        var header = JSONWriter(capacity: 96)
        header.add("alg", signer.name)
        header.add("kid", kid)
        header.add("typ", type)
        let payloadJSON = try (payload as? any CompactJSONPayload)?.compactJSON ?? Array(DefaultJWTSerializer().jsonEncoder.encode(payload))
        let signingInput = Base64URL.encode(header.finishBytes()) + "." + Base64URL.encode(payloadJSON)
        return signingInput + "." + Base64URL.encode(try signer.sign(Array(signingInput.utf8)))
    }
}

extension KeyManager {
    /// How far replicas' clocks may disagree, in seconds: the same 5 s the key schedule assumes (see the publish
    /// lead in `policy(for:)`).
    static let replicaClockSkew = 5

    /// Verifies an RFC 9068 access token this server (or a replica sharing its keys) signed: header `typ` at+jwt, a
    /// published key (the signing one or one retired within retention), `iss` = `issuer`, and `exp`/`nbf`/`iat`
    /// within `replicaClockSkew` of this server's clock (a replica whose clock is a second behind the issuer's must
    /// not call a fresh token "not yet valid"; callers check `exp` strictly themselves). Throws a `JOSEError`.
    func verifyOwnAccessToken(_ token: String, issuer: String) async throws(JOSEError) -> AccessTokenClaims {
        guard let verifier = snapshot.withLockedValue({ $0?.verifier }) else { throw JOSEError(.unknownKey, "no signing keys are loaded") }
        let policy = JWTVerificationPolicy(issuers: [issuer], audiences: [], clockSkew: Self.replicaClockSkew)
        return try await verifier.verifyAccessToken(token, policy: policy, now: clock.now())
    }
}

/// A JWT payload that writes its own compact JSON (the same members its `Encodable` conformance writes).
protocol CompactJSONPayload: JWTPayload {
    var compactJSON: [UInt8] { get }
}

extension AccessTokenClaims: CompactJSONPayload {
    var compactJSON: [UInt8] {
        var writer = JSONWriter(capacity: 384)
        writer.add("iss", iss)
        writer.add("sub", sub)
        if aud.count == 1 { writer.add("aud", aud[0]) } else { writer.add("aud", aud) }  // as `encode(to:)` does
        writer.add("exp", exp)
        writer.add("iat", iat)
        writer.add("nbf", nbf)
        writer.add("jti", jti)
        writer.add("client_id", client_id)
        writer.add("scope", scope)
        writer.add("auth_time", auth_time)
        if let act {
            var actor: [UInt8] = []
            JSONWriter.appendQuoted(act.sub, to: &actor)
            writer.addRaw("act", "{\"sub\":" + String(decoding: actor, as: UTF8.self) + "}")
        }
        return writer.finishBytes()
    }
}

/// Re-reads the key directory on an interval until graceful shutdown.
public struct KeyRefreshService: Service {
    let keys: KeyManager
    let interval: Duration

    public init(keys: KeyManager, interval: Duration = .seconds(5)) {
        self.keys = keys
        self.interval = interval
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                do {
                    try await keys.reload()
                } catch {
                    keys.logger.error("reading the signing keys failed; the previous key set stays in use", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}

extension KeyManager {
    /// The key ring policy a configuration implies: publish a new key for longer than verifiers may cache the
    /// JWKS (plus the rescan interval and a margin), keep retired keys as long as any token they signed can live.
    public static func policy(for configuration: AuthServerConfiguration) -> KeyRing.Policy {
        let tokens = configuration.tokens
        let longestSigned = max(min(tokens.jwtMaxLifetime, max(tokens.accessTokenLifetime, tokens.implicitAccessTokenLifetime)), 300)
        return KeyRing.Policy(
            publishLead: configuration.signing.jwksMaxAge + configuration.signing.rescanInterval + 5,
            retention: longestSigned + configuration.signing.jwksMaxAge + 60,
            rotationPeriod: configuration.signing.rotationPeriod
        )
    }

    /// The key manager for a server with this configuration and data directory.
    public static func forServer(_ configuration: AuthServerConfiguration, dataDirectory: String, clock: any AuthClock = SystemAuthClock(), logger: Logger) -> KeyManager {
        let path = configuration.signing.keyDirectory.hasPrefix("/") ? configuration.signing.keyDirectory : dataDirectory + "/" + configuration.signing.keyDirectory
        return KeyManager(
            directory: KeyDirectory(path: path), algorithm: SigningAlgorithm(rawValue: configuration.signing.algorithm) ?? .es256,
            policy: policy(for: configuration), clock: clock, logger: logger
        )
    }

    /// Publishes a new key now; it signs after the publish lead. Returns it.
    public func rotate() throws -> ManagedKey {
        let now = clock.now()
        return try directory.withCreationLock {
            // Under the lock: a replica's automatic rotation and this one are ordered, so the schedule computed here
            // sees a key the other just created (and this key activates after the publish lead in any case).
            let ring = KeyRing(keys: try directory.load(), policy: policy)
            let key = ManagedKey(key: try SigningKey.generate(algorithm), createdAt: now, activatesAt: ring.activationTimeForNewKey(at: now))
            try directory.save(key)
            return key
        }
    }

    /// The keys on disk with their state at `now`.
    public func describe() throws -> [(key: ManagedKey, state: String)] {
        let now = clock.now()
        let ring = KeyRing(keys: try directory.load(), policy: policy)
        let signing = ring.signingKey(at: now)
        return ring.keys.map { key in
            if key.activatesAt > now { return (key, "next (signs from \(key.activatesAt))") }
            if key == signing { return (key, "signing") }
            let retired = ring.retiredAt(key, now: now) ?? now
            return (key, "retired (published until \(retired + policy.retention))")
        }
    }
}
