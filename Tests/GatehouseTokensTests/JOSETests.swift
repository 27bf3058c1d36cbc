import Crypto
import Foundation
import GatehouseTokens
import JWTKit
import Testing

/// A payload that accepts any claims (for foreign test vectors).
struct AnyClaims: JWTPayload {
    var iss: String?
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

@Suite struct JOSEVectorTests {
    /// RFC 7638 §3.1.
    @Test func rfc7638Thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        #expect(JWKThumbprint.compute(["kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"]) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        #expect(JWKThumbprint.compute(["kty": "RSA", "n": n]) == nil)
        #expect(JWKThumbprint.compute(["kty": "oct", "k": "x"]) == nil)
    }

    static let a3Token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"

    /// RFC 7515 Appendix A.3: somebody else's ES256 JWS verifies with the library we sign with.
    @Test func rfc7515AppendixA3Verifies() async throws {
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: try ES256PublicKey(parameters: (x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")))
        let claims = try await keys.verify(Self.a3Token, as: AnyClaims.self)
        #expect(claims.iss == "joe")
        // One changed signature byte and it no longer verifies. (Not the last character: its low bits are
        // base64url padding and decode to the same bytes.)
        let parts = Self.a3Token.split(separator: ".")
        var signature = Array(parts[2])
        signature[10] = signature[10] == "A" ? "B" : "A"
        let tampered = "\(parts[0]).\(parts[1]).\(String(signature))"
        await #expect(throws: (any Error).self) { try await keys.verify(tampered, as: AnyClaims.self) }
    }
}

@Suite struct JWTSigningAndVerificationTests {
    func claims(now: Int, aud: String = "api", iss: String = "https://auth.example") -> AccessTokenClaims {
        AccessTokenClaims(iss: iss, sub: "u1", aud: [aud], exp: now + 300, iat: now, nbf: now, jti: "j1", client_id: "web", scope: "orders:read", auth_time: now)
    }

    func sign(_ payload: some JWTPayload, with key: SigningKey, typ: String = "at+jwt") async throws -> String {
        let keys = JWTKeyCollection()
        try await key.register(in: keys)
        var header = JWTHeader()
        header.typ = typ
        return try await keys.sign(payload, kid: JWKIdentifier(string: key.kid), header: header)
    }

    func jwks(_ keys: SigningKey...) -> String {
        "{\"keys\":[" + keys.map(\.publicJWK).joined(separator: ",") + "]}"
    }

    let policy = JWTVerificationPolicy(issuers: ["https://auth.example"], audiences: ["api"])

    @Test(arguments: SigningAlgorithm.allCases)
    func roundTripEveryAlgorithm(algorithm: SigningAlgorithm) async throws {
        let key = try SigningKey.generate(algorithm)
        #expect(key.kid == JWKThumbprint.compute(key.publicMembers))
        // Reloading from PEM gives the same key id.
        #expect(try SigningKey(algorithm: algorithm, privateKeyPEM: key.privateKeyPEM).kid == key.kid)
        let now = 1_800_000_000
        let token = try await sign(claims(now: now), with: key)
        let header = try JWSHeader(token: token)
        #expect(header.alg == algorithm.rawValue)
        #expect(header.kid == key.kid)
        #expect(header.typ == "at+jwt")
        let verifier = try await JWTVerifier(jwksJSON: jwks(key))
        let verified = try await verifier.verifyAccessToken(token, policy: policy, now: now + 10)
        #expect(verified == claims(now: now))
    }

    func expectRejected(_ token: String, _ code: JOSEError.Code, verifier: JWTVerifier, now: Int, policy: JWTVerificationPolicy? = nil, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            _ = try await verifier.verifyAccessToken(token, policy: policy ?? self.policy, now: now)
            Issue.record("token was accepted", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, sourceLocation: sourceLocation)
        }
    }

    static func segment(_ json: String) -> String { Base64URL.encode(Array(json.utf8)) }

    @Test func algNoneNeverVerifies() async throws {
        let key = try SigningKey.generate(.es256)
        let verifier = try await JWTVerifier(jwksJSON: jwks(key))
        let now = 1_800_000_000
        let good = try await sign(claims(now: now), with: key)
        let payload = good.split(separator: ".")[1]
        for alg in ["none", "None", "NONE"] {
            let header = Self.segment("{\"alg\":\"\(alg)\",\"kid\":\"\(key.kid)\",\"typ\":\"at+jwt\"}")
            await expectRejected("\(header).\(payload).", .algorithmNotAllowed, verifier: verifier, now: now)
        }
    }

    /// The classic key-confusion attack: HS256 with the verifier's own public key as the HMAC secret.
    @Test func hs256KeyedWithThePublicKeyNeverVerifies() async throws {
        for algorithm in [SigningAlgorithm.rs256, .es256] {
            let key = try SigningKey.generate(algorithm)
            let verifier = try await JWTVerifier(jwksJSON: jwks(key))
            let now = 1_800_000_000
            let good = try await sign(claims(now: now), with: key)
            let header = Self.segment("{\"alg\":\"HS256\",\"kid\":\"\(key.kid)\",\"typ\":\"at+jwt\"}")
            let input = "\(header).\(good.split(separator: ".")[1])"
            for secret in [key.publicJWK, "{\"keys\":[\(key.publicJWK)]}", key.publicMembers["n"] ?? key.publicMembers["x"] ?? ""] {
                let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: Array(secret.utf8)))
                await expectRejected("\(input).\(Base64URL.encode(Array(mac)))", .algorithmNotAllowed, verifier: verifier, now: now)
            }
        }
    }

    @Test func foreignKidModifiedPayloadAndSwappedKeysNeverVerify() async throws {
        let published = try SigningKey.generate(.es256)
        let foreign = try SigningKey.generate(.es256)
        let verifier = try await JWTVerifier(jwksJSON: jwks(published))
        let now = 1_800_000_000
        // Signed by a key that is not published.
        await expectRejected(try await sign(claims(now: now), with: foreign), .unknownKey, verifier: verifier, now: now)
        // Signed by a foreign key but claiming the published kid.
        let foreignToken = try await sign(claims(now: now), with: foreign)
        let parts = foreignToken.split(separator: ".")
        let liedHeader = Self.segment("{\"alg\":\"ES256\",\"kid\":\"\(published.kid)\",\"typ\":\"at+jwt\"}")
        await expectRejected("\(liedHeader).\(parts[1]).\(parts[2])", .badSignature, verifier: verifier, now: now)
        // A modified payload (scope widened) with the original signature.
        let good = try await sign(claims(now: now), with: published).split(separator: ".")
        var widened = claims(now: now)
        widened.scope = "orders:read orders:write admin"
        let widenedSegment = Base64URL.encode(try JSONEncoder().encode(widened))
        await expectRejected("\(good[0]).\(widenedSegment).\(good[2])", .badSignature, verifier: verifier, now: now)
        // An EdDSA token under an ES256 key's kid.
        let ed = try SigningKey.generate(.edDSA)
        let edToken = try await sign(claims(now: now), with: ed).split(separator: ".")
        let mixedHeader = Self.segment("{\"alg\":\"EdDSA\",\"kid\":\"\(published.kid)\",\"typ\":\"at+jwt\"}")
        await expectRejected("\(mixedHeader).\(edToken[1]).\(edToken[2])", .algorithmNotAllowed, verifier: verifier, now: now)
        // Garbage.
        await expectRejected("not.a.jwt", .malformed, verifier: verifier, now: now)
    }

    @Test func claimsChecks() async throws {
        let key = try SigningKey.generate(.es256)
        let verifier = try await JWTVerifier(jwksJSON: jwks(key))
        let now = 1_800_000_000
        let token = try await sign(claims(now: now), with: key)
        await expectRejected(token, .expired, verifier: verifier, now: now + 300 + 30)
        _ = try await verifier.verifyAccessToken(token, policy: policy, now: now + 300 + 29)  // within the skew
        await expectRejected(token, .notYetValid, verifier: verifier, now: now - 31)
        await expectRejected(try await sign(claims(now: now, aud: "other"), with: key), .wrongAudience, verifier: verifier, now: now)
        await expectRejected(try await sign(claims(now: now, iss: "https://evil.example"), with: key), .wrongIssuer, verifier: verifier, now: now)
        await expectRejected(try await sign(claims(now: now), with: key, typ: "JWT"), .wrongType, verifier: verifier, now: now)
        var restricted = policy
        restricted.allowedAlgorithms = [.edDSA]
        await expectRejected(token, .algorithmNotAllowed, verifier: verifier, now: now, policy: restricted)
    }

    @Test func symmetricKeysInAJWKSAreIgnored() async throws {
        let key = try SigningKey.generate(.es256)
        let document = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\",\"alg\":\"HS256\"},\(key.publicJWK)]}"
        let verifier = try await JWTVerifier(jwksJSON: document)
        #expect(verifier.published.keys.sorted() == [key.kid])
    }
}
