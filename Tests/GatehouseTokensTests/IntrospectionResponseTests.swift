import Foundation
import GatehouseTokens
import Testing

/// RFC 9701 responses as the gateway and backends read them.
@Suite struct IntrospectionResponseTests {
    func response(_ tokenIntrospection: String) throws -> IntrospectionResponse {
        let json = #"{"iss":"https://as.example","aud":"gatehouse-gateway","iat":1800000000,"token_introspection":"# + tokenIntrospection + "}"
        return try JSONDecoder().decode(IntrospectionResponse.self, from: Data(json.utf8))
    }

    @Test func anActiveAccessTokenBecomesAccessTokenClaims() throws {
        let claims = try #require(
            try response(#"{"active":true,"token_type":"Bearer","scope":"orders:read","client_id":"c","sub":"u","exp":1800000600,"iat":1800000000,"aud":"api","iss":"https://as.example","jti":"7"}"#).accessTokenClaims
        )
        #expect(claims.aud == ["api"])  // a single audience string is accepted
        #expect(claims.scopes == ["orders:read"])
        #expect(claims.exp == 1_800_000_600)
        #expect(claims.client_id == "c")
    }

    @Test func refreshTokensInactiveTokensAndTokensWithoutExpiryAreNotAccessTokens() throws {
        // A refresh token is active at the authorization server, but must never open an API.
        #expect(try response(#"{"active":true,"token_type":"refresh_token","exp":1800000600,"client_id":"c"}"#).accessTokenClaims == nil)
        #expect(try response(#"{"active":false}"#).accessTokenClaims == nil)
        #expect(try response(#"{"active":true,"token_type":"Bearer"}"#).accessTokenClaims == nil)
        // No token_type at all (other servers): treated as an access token.
        #expect(try response(#"{"active":true,"exp":1800000600,"client_id":"c"}"#).accessTokenClaims != nil)
    }
}
