import Testing

@testable import GatehouseTokens

@Suite struct BearerTests {
    @Test(arguments: [
        (["Bearer abc.DEF-_~+/=="], "abc.DEF-_~+/=="),
        (["bearer  mF_9.B5f-4.1JqM"], "mF_9.B5f-4.1JqM"),  // RFC 6750 §2.1 example, scheme case-insensitive
        (["BEARER x"], "x"),
    ])
    func extractsBearerTokens(values: [String], token: String) throws {
        #expect(try BearerToken.extract(authorizationValues: values).get() == token)
    }

    @Test func missingOrOtherSchemes() {
        #expect(BearerToken.extract(authorizationValues: []) == .failure(.missing))
        #expect(BearerToken.extract(authorizationValues: ["Basic dXNlcjpwYXNz"]) == .failure(.missing))
        #expect(BearerToken.extract(authorizationValues: ["Bearer"]) == .failure(.missing))
    }

    @Test(arguments: ["Bearer a b", "Bearer a=b", "Bearer ===", "Bearer tok\"en", "Bearer tök"])
    func malformedTokens(value: String) {
        guard case .failure(.malformed) = BearerToken.extract(authorizationValues: [value]) else {
            Issue.record("\(value) should be malformed")
            return
        }
    }

    @Test func severalAuthorizationHeadersAreRefused() {
        guard case .failure(.malformed) = BearerToken.extract(authorizationValues: ["Bearer a", "Bearer b"]) else {
            Issue.record("expected malformed")
            return
        }
    }

    @Test func jwtShape() {
        #expect(BearerToken.isJWTShaped("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UifQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6"))
        #expect(BearerToken.isJWTShaped("a.b."))  // unsecured JWS shape: a verifier refuses it later, but it is JWT-shaped
        #expect(!BearerToken.isJWTShaped("AAAAAAAAAAEx7hQYvH9Iq6hnDVG2XEAXBvmcLxNhwgOoIE-3vKHgn8sfAkM"))  // an opaque split token
        #expect(!BearerToken.isJWTShaped("a..c"))
        #expect(!BearerToken.isJWTShaped("a.b.c.d"))
        #expect(!BearerToken.isJWTShaped("a.b+c.d"))
    }

    @Test func challengesFollowRFC6750() {
        #expect(BearerChallenge(realm: "gatehouse").headerValue == "Bearer realm=\"gatehouse\"")
        #expect(BearerChallenge(realm: "gatehouse").status == 401)
        let invalid = BearerChallenge(realm: "example", error: .invalidToken, description: "The access token expired")
        #expect(invalid.headerValue == "Bearer realm=\"example\", error=\"invalid_token\", error_description=\"The access token expired\"")
        #expect(invalid.status == 401)
        let scope = BearerChallenge(realm: "r", error: .insufficientScope, scope: "orders:read orders:write")
        #expect(scope.headerValue == "Bearer realm=\"r\", error=\"insufficient_scope\", scope=\"orders:read orders:write\"")
        #expect(scope.status == 403)
        #expect(BearerChallenge(realm: "r", error: .invalidRequest).status == 400)
        #expect(BearerChallenge(realm: "a\"b\\c", error: .invalidToken, description: "bad \"x\"\n").headerValue == "Bearer realm=\"a\\\"b\\\\c\", error=\"invalid_token\", error_description=\"bad \\\"x\\\"\"")
    }

    @Test func scopeRequirements() {
        let all = ScopeRequirement(allOf: ["orders:read", "orders:write"])
        #expect(all.missing(from: ["orders:read", "orders:write", "x"]) == nil)
        #expect(all.missing(from: ["orders:read"]) == "orders:read orders:write")
        let any = ScopeRequirement(anyOf: ["admin", "orders:write"])
        #expect(any.missing(from: ["orders:write"]) == nil)
        #expect(any.missing(from: ["orders:read"]) == "admin orders:write")
        #expect(ScopeRequirement().missing(from: []) == nil)
    }
}

/// The RFC 6749 §3.3 scope grammar.
@Suite struct ScopeSyntaxTests {
    @Test func parsesSpaceDelimitedScopeTokens() {
        #expect(ScopeSyntax.parse("a b:c") == ["a", "b:c"])
        #expect(ScopeSyntax.parse("a a") == ["a"])  // duplicates dropped
        #expect(ScopeSyntax.parse("a  b") == nil)  // an empty token between two spaces
        #expect(ScopeSyntax.parse("a \"b") == nil)  // %x22 is outside the grammar
        #expect(ScopeSyntax.parse("") == nil)
    }

    @Test func scopeTokenCharacters() {
        #expect(ScopeSyntax.isValidToken("orders:read!#[]~"))
        #expect(!ScopeSyntax.isValidToken("a\\b"))  // %x5C
        #expect(!ScopeSyntax.isValidToken("a b"))
        #expect(!ScopeSyntax.isValidToken("é"))
        #expect(!ScopeSyntax.isValidToken(""))
    }
}
