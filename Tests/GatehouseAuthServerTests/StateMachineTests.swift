import Foundation
import GatehouseStore
import GatehouseTokens
import Testing

@testable import GatehouseAuthServer

@Suite struct AuthorizationCodeRedemptionTests {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    func record(challenge: String? = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", redirectGiven: Bool = true, usedAt: Int? = nil) -> AuthorizationCodeRecord {
        AuthorizationCodeRecord(
            codeHash: "h", clientID: "web", userID: "u1", redirectURI: "https://app.example/cb", redirectURIWasGiven: redirectGiven,
            scope: "a", codeChallenge: challenge, authTime: 100, issuedAt: 100, expiresAt: 160, familyID: "fam", usedAt: usedAt
        )
    }

    func request(client: String = "web", redirect: String? = "https://app.example/cb", verifier: String? = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") -> AuthorizationCodeRedemption.Request {
        .init(clientID: client, redirectURI: redirect, codeVerifier: verifier)
    }

    @Test func validCodeIssues() {
        #expect(AuthorizationCodeRedemption.decide(record(), request: request(), now: 120) == .redeem(record()))
    }

    @Test func unknownCodeIsRefused() {
        guard case .refuse(let error) = AuthorizationCodeRedemption.decide(nil, request: request(), now: 120) else {
            Issue.record("expected refusal")
            return
        }
        #expect(error.code == .invalidGrant)
    }

    @Test func replayRevokesTheFamily() {
        let decision = AuthorizationCodeRedemption.decide(record(usedAt: 110), request: request(), now: 120)
        guard case .refuseAndRevoke(let family, let error) = decision else {
            Issue.record("expected revocation, got \(decision)")
            return
        }
        #expect(family == "fam")
        #expect(error.code == .invalidGrant)
    }

    /// Only a presentation with the right binding counts as use: a used code presented with a wrong verifier or
    /// redirect URI (someone holding the stolen code alone) is refused without revoking anything.
    @Test(arguments: ["wrong verifier", "wrong redirect", "missing verifier"])
    func replayWithAWrongBindingRevokesNothing(kind: String) {
        let decidedRequest: AuthorizationCodeRedemption.Request =
            switch kind {
            case "wrong verifier": request(verifier: String(repeating: "x", count: 43))
            case "wrong redirect": request(redirect: "https://app.example/cb2")
            default: request(verifier: nil)
            }
        let decision = AuthorizationCodeRedemption.decide(record(usedAt: 110), request: decidedRequest, now: 120)
        guard case .refuse(let error) = decision else {
            Issue.record("expected plain refusal, got \(decision)")
            return
        }
        #expect(error.code == .invalidGrant)
    }

    @Test func replayAfterExpiryStillRevokes() {
        guard case .refuseAndRevoke = AuthorizationCodeRedemption.decide(record(usedAt: 110), request: request(), now: 500) else {
            Issue.record("a replay of an expired code must still revoke")
            return
        }
    }

    @Test func replayByAnotherClientRevokesNothing() {
        let decision = AuthorizationCodeRedemption.decide(record(usedAt: 110), request: request(client: "other"), now: 120)
        guard case .refuse = decision else {
            Issue.record("expected plain refusal, got \(decision)")
            return
        }
    }

    @Test(arguments: [
        ("expired", 160),
        ("wrong client", 120),
        ("wrong redirect", 120),
        ("missing redirect", 120),
        ("wrong verifier", 120),
        ("missing verifier", 120),
        ("malformed verifier", 120),
    ])
    func refusals(kind: String, now: Int) {
        let decidedRequest: AuthorizationCodeRedemption.Request =
            switch kind {
            case "wrong client": request(client: "other")
            case "wrong redirect": request(redirect: "https://app.example/cb2")
            case "missing redirect": request(redirect: nil)
            case "wrong verifier": request(verifier: String(repeating: "x", count: 43))
            case "missing verifier": request(verifier: nil)
            case "malformed verifier": request(verifier: "short")
            default: request()
            }
        guard case .refuse(let error) = AuthorizationCodeRedemption.decide(record(), request: decidedRequest, now: now) else {
            Issue.record("\(kind) should be refused")
            return
        }
        #expect(error.code == .invalidGrant)
    }

    @Test func verifierWithoutStoredChallengeIsADowngrade() {
        let decision = AuthorizationCodeRedemption.decide(record(challenge: nil), request: request(), now: 120)
        guard case .refuse(let error) = decision else {
            Issue.record("expected refusal")
            return
        }
        #expect(error.description.contains("no code_challenge"))
    }

    @Test func noPKCEOnEitherSideIsAccepted() {
        let code = record(challenge: nil)
        #expect(AuthorizationCodeRedemption.decide(code, request: request(verifier: nil), now: 120) == .redeem(code))
    }

    @Test func redirectMayBeOmittedWhenTheAuthorizationRequestOmittedIt() {
        let code = record(redirectGiven: false)
        #expect(AuthorizationCodeRedemption.decide(code, request: request(redirect: nil), now: 120) == .redeem(code))
    }
}

@Suite struct RefreshRotationTests {
    func token(rotatedAt: Int? = nil, revoked: Bool = false, expiresAt: Int = 1000, familyExpiresAt: Int = 5000) -> TokenRecord {
        TokenRecord(
            id: 1, tokenHash: "h", kind: .refresh, clientID: "web", userID: "u", scope: "a b", issuedAt: 0, expiresAt: expiresAt,
            familyID: "fam", familyExpiresAt: familyExpiresAt, grantType: "password", authTime: 0, revoked: revoked, rotatedAt: rotatedAt
        )
    }

    @Test func firstUseRotates() {
        #expect(RefreshRotation.decide(token(), clientID: "web", requestedScope: nil, now: 10, grace: 5) == .rotate(scope: "a b"))
    }

    @Test func narrowerScopeIsAllowedWiderIsNot() {
        #expect(RefreshRotation.decide(token(), clientID: "web", requestedScope: "a", now: 10, grace: 5) == .rotate(scope: "a"))
        guard case .refuse(let error) = RefreshRotation.decide(token(), clientID: "web", requestedScope: "a c", now: 10, grace: 5) else {
            Issue.record("wider scope must be refused")
            return
        }
        #expect(error.code == .invalidScope)
    }

    @Test func reuseWithinGraceReissues() {
        #expect(RefreshRotation.decide(token(rotatedAt: 10), clientID: "web", requestedScope: nil, now: 15, grace: 5) == .reissueWithinGrace(scope: "a b"))
    }

    @Test func reuseAfterGraceRevokesTheFamily() {
        let decision = RefreshRotation.decide(token(rotatedAt: 10), clientID: "web", requestedScope: nil, now: 16, grace: 5)
        guard case .revokeFamily(let family, let error) = decision else {
            Issue.record("expected family revocation, got \(decision)")
            return
        }
        #expect(family == "fam")
        #expect(error.code == .invalidGrant)
    }

    @Test func zeroGraceRevokesOnAnyReuse() {
        guard case .revokeFamily = RefreshRotation.decide(token(rotatedAt: 10), clientID: "web", requestedScope: nil, now: 11, grace: 0) else {
            Issue.record("expected family revocation")
            return
        }
    }

    @Test(arguments: [
        ("revoked", 10), ("idle-expired", 1000), ("family-expired", 600), ("other client", 10),
    ])
    func refusals(kind: String, now: Int) {
        let record =
            switch kind {
            case "revoked": token(revoked: true)
            case "family-expired": token(familyExpiresAt: 500)
            default: token()
            }
        let client = kind == "other client" ? "mallory" : "web"
        guard case .refuse(let error) = RefreshRotation.decide(record, clientID: client, requestedScope: nil, now: now, grace: 5) else {
            Issue.record("\(kind) must be refused")
            return
        }
        #expect(error.code == .invalidGrant)
    }
}

@Suite struct LoginThrottleTests {
    let policy = LoginThrottle.Policy(maxFailuresBeforeDelay: 5, baseDelay: 1, maxDelay: 60, failureWindow: 900)

    @Test func fiveFailuresAreFreeThenTheDelayDoubles() {
        var throttle = LoginThrottle(policy: policy)
        for _ in 0..<4 { throttle.recordFailure("alice", now: 100) }
        #expect(throttle.retryAfter("alice", now: 100) == nil)
        throttle.recordFailure("alice", now: 100)  // 5th
        #expect(throttle.retryAfter("alice", now: 100) == 1)
        #expect(throttle.retryAfter("alice", now: 101) == nil)
        throttle.recordFailure("alice", now: 101)  // 6th
        #expect(throttle.retryAfter("alice", now: 101) == 2)
        throttle.recordFailure("alice", now: 103)  // 7th
        #expect(throttle.retryAfter("alice", now: 103) == 4)
        #expect(throttle.retryAfter("bob", now: 103) == nil)
    }

    @Test func delayIsCapped() {
        var throttle = LoginThrottle(policy: policy)
        for _ in 0..<40 { throttle.recordFailure("alice", now: 100) }
        #expect(throttle.retryAfter("alice", now: 100) == 60)
    }

    @Test func successClearsAndWindowForgets() {
        var throttle = LoginThrottle(policy: policy)
        for _ in 0..<8 { throttle.recordFailure("alice", now: 100) }
        #expect(throttle.retryAfter("alice", now: 100) != nil)
        throttle.recordSuccess("alice")
        #expect(throttle.retryAfter("alice", now: 100) == nil)
        for _ in 0..<8 { throttle.recordFailure("bob", now: 100) }
        #expect(throttle.failures("bob", now: 1000) == 0)  // window passed: the real user is never locked out for good
        throttle.recordFailure("bob", now: 1000)
        #expect(throttle.failures("bob", now: 1000) == 1)
        #expect(throttle.retryAfter("bob", now: 1000) == nil)
    }

    @Test func trackedKeysAreBounded() {
        var throttle = LoginThrottle(policy: .init(maxTrackedKeys: 10))
        for index in 0..<100 { throttle.recordFailure("user\(index)", now: index) }
        #expect(throttle.entries.count <= 10)
    }
}

@Suite struct FormParametersTests {
    @Test func decodesPercentAndPlus() throws {
        let form = try FormParameters.parse("grant_type=password&username=al%69ce&password=a+b%26c&scope=")
        #expect(form["username"] == "alice")
        #expect(form["password"] == "a b&c")
        #expect(form["scope"] == nil)
    }

    @Test func duplicatesAreRefused() {
        #expect(throws: FormParameters.ParseError.duplicate("code")) { try FormParameters.parse("code=a&code=b") }
    }

    @Test func badEncodingIsRefused() {
        #expect(throws: FormParameters.ParseError.badEncoding) { try FormParameters.parse("a=%zz") }
        #expect(throws: FormParameters.ParseError.badEncoding) { try FormParameters.parse("a=%ff") }
    }

    @Test func encodingRoundTrips() throws {
        let encoded = FormParameters.encode([("state", "a b&c=d/é"), ("skip", nil)])
        #expect(encoded == "state=a%20b%26c%3Dd%2F%C3%A9")
        #expect(try FormParameters.parse(encoded)["state"] == "a b&c=d/é")
    }

    @Test func jsonEscaping() {
        var writer = JSONWriter()
        writer.add("k", "q\"\\\n\u{01}<")
        writer.add("n", 3)
        writer.add("b", true)
        writer.add("l", ["x", "y"])
        #expect(writer.finish() == #"{"k":"q\"\\\n\u0001\u003c","n":3,"b":true,"l":["x","y"]}"#)
    }

    @Test(arguments: [true, false])
    func redirectURIMatching(native: Bool) {
        #expect(AuthorizationFlow.redirectURIMatches(registered: "https://app.example/cb", requested: "https://app.example/cb", variableLoopbackPort: native))
        #expect(!AuthorizationFlow.redirectURIMatches(registered: "https://app.example/cb", requested: "https://app.example/cb/", variableLoopbackPort: native))
        #expect(!AuthorizationFlow.redirectURIMatches(registered: "https://app.example/cb", requested: "https://app.example:8443/cb", variableLoopbackPort: native))
        // Another loopback port: native apps only (RFC 8252 §7.3).
        #expect(AuthorizationFlow.redirectURIMatches(registered: "http://127.0.0.1:8081/cb", requested: "http://127.0.0.1:51234/cb", variableLoopbackPort: native) == native)
        #expect(AuthorizationFlow.redirectURIMatches(registered: "http://127.0.0.1:8081/cb", requested: "http://127.0.0.1:8081/cb", variableLoopbackPort: native))
        #expect(!AuthorizationFlow.redirectURIMatches(registered: "http://127.0.0.1:8081/cb", requested: "http://127.0.0.1:51234/other", variableLoopbackPort: native))
        #expect(!AuthorizationFlow.redirectURIMatches(registered: "http://127.0.0.1:8081/cb", requested: "http://localhost:8081/cb", variableLoopbackPort: native))
    }
}

/// The access-token claims the server writes itself decode to the same claims as Foundation's encoding of them.
@Suite struct CompactClaimsJSONTests {
    func decoded(_ bytes: [UInt8]) throws -> AccessTokenClaims {
        try JSONDecoder().decode(AccessTokenClaims.self, from: Data(bytes))
    }

    @Test func accessTokenClaimsRoundTrip() throws {
        let full = AccessTokenClaims(
            iss: "https://as.example", sub: "al\"ice\\\u{1}é", aud: ["https://api.example"], exp: 1_800_000_600, iat: 1_800_000_000,
            nbf: 1_800_000_000, jti: "j1", client_id: "demo-web", scope: "orders:read orders:write", auth_time: 1_799_999_990
        )
        let minimal = AccessTokenClaims(
            iss: "https://as.example", sub: "svc", aud: ["a", "b"], exp: 2, iat: 1, nbf: 1, jti: "j2", client_id: "svc", scope: nil, auth_time: nil
        )
        for claims in [full, minimal] {
            #expect(try decoded(claims.compactJSON) == claims)
            let viaFoundation = try JSONSerialization.jsonObject(with: JSONEncoder().encode(claims)) as? NSDictionary
            let written = try JSONSerialization.jsonObject(with: Data(claims.compactJSON)) as? NSDictionary
            #expect(written == viaFoundation)  // the same members and values, single audiences as a string
        }
    }
}
