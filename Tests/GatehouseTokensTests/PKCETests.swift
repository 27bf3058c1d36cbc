import GatehouseTokens
import Testing

@Suite struct PKCETests {
    /// RFC 7636 Appendix B.
    @Test func rfc7636AppendixBVector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        #expect(PKCE.challenge(forVerifier: verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        #expect(PKCE.verify(verifier: verifier, challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"))
    }

    /// RFC 7636 Appendix B: the verifier is base64url of these 32 octets.
    @Test func rfc7636AppendixBVerifierEncoding() {
        let octets: [UInt8] = [116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121]
        #expect(Base64URL.encode(octets) == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        #expect(Base64URL.decode("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == octets)
    }

    @Test func wrongVerifierFails() {
        #expect(!PKCE.verify(verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"))
    }

    @Test(arguments: [
        ("short", false),
        (String(repeating: "a", count: 42), false),
        (String(repeating: "a", count: 43), true),
        (String(repeating: "a", count: 128), true),
        (String(repeating: "a", count: 129), false),
        (String(repeating: "a", count: 42) + "+", false),
        (String(repeating: "a", count: 40) + "-._~", true),
    ])
    func verifierSyntax(verifier: String, valid: Bool) {
        #expect(PKCE.isValidVerifier(verifier) == valid)
    }

    @Test func challengeSyntax() {
        #expect(PKCE.isValidChallenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"))
        #expect(!PKCE.isValidChallenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c"))
        #expect(!PKCE.isValidChallenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"))
    }
}

@Suite struct SecureTokenTests {
    @Test func generatesDistinct256BitValues() {
        let first = SecureToken.generate()
        let second = SecureToken.generate()
        #expect(first != second)
        #expect(first.utf8.count == 43)
        #expect(Base64URL.decode(first)?.count == 32)
    }

    /// SHA-256("abc") from FIPS 180-2, base64url.
    @Test func hashIsBase64URLSHA256() {
        #expect(SecureToken.sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SecureToken.hash("abc") == "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0")
    }

    @Test func constantTimeEquality() {
        #expect(SecureToken.constantTimeEquals("abc", "abc"))
        #expect(!SecureToken.constantTimeEquals("abc", "abd"))
        #expect(!SecureToken.constantTimeEquals("abc", "abcd"))
    }

    /// RFC 4648 §10 vectors, in the URL alphabet without padding.
    @Test(arguments: [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")])
    func base64URLVectors(plain: String, encoded: String) {
        #expect(Base64URL.encode(Array(plain.utf8)) == encoded)
        #expect(Base64URL.decode(encoded) == Array(plain.utf8))
    }

    @Test func base64URLRejectsOtherAlphabets() {
        #expect(Base64URL.decode("a+b/") == nil)
        #expect(Base64URL.decode("Zg==") == Array("f".utf8))
        #expect(Base64URL.decode("Z") == nil)
    }
}

@Suite struct TokenLocatorTests {
    @Test func roundTrip() throws {
        let (token, locator) = TokenLocator.make(id: 0x0102_0304_0506_0708)
        #expect(token.utf8.count == 54)
        let parsed = try #require(TokenLocator(token: token))
        #expect(parsed == locator)
        #expect(parsed.id == 0x0102_0304_0506_0708)
        #expect(parsed.hash == SecureToken.hash(token))
        #expect(TokenLocator.make(id: 1).token != TokenLocator.make(id: 1).token)  // 256 random bits each
    }

    @Test(arguments: ["", "short", String(repeating: "A", count: 54), String(repeating: "!", count: 54), String(repeating: "B", count: 53)])
    func malformedTokensAreRejected(token: String) {
        #expect(TokenLocator(token: token) == nil)  // all-"A" decodes to id 0, which is never issued
    }
}
