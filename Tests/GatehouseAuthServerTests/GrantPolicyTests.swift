import Foundation
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// Refresh-token families and scope policy (defaults, later reductions of a registration), over real HTTP.
@Suite struct GrantPolicyTests {
    let web = ("demo-web", "demo-web-secret")
    let service = ("demo-service", "demo-service-secret")
    let gateway = ("gatehouse-gateway", "gatehouse-gateway-secret")

    func isActive(_ client: any TestClientProtocol, _ token: String) async throws -> Bool {
        let headers: HTTPFields = [.authorization: "Basic " + Data("\(gateway.0):\(gateway.1)".utf8).base64EncodedString()]
        return try await client.send(.post, "/introspect", headers: headers, form: [("token", token)]).json["active"] as? Bool == true
    }

    func exchange(_ client: any TestClientProtocol, _ token: String) async throws -> Reply {
        try await client.token(
            [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", token), ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token")],
            basic: gateway
        )
    }

    // MARK: Refresh families

    /// A password grant for bob, then one rotation: the first refresh token and the reply that rotated it.
    func rotatedOnce(_ client: any TestClientProtocol) async throws -> (r1: String, rotated: Reply, r2: String) {
        let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password")], basic: web)
        let r1 = try #require(first.string("refresh_token"))
        let rotated = try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1)], basic: web)
        return (r1, rotated, try #require(rotated.string("refresh_token")))
    }

    /// Reuse within the grace answers with an access token only: the successor stays the family's one live
    /// refresh token (today's fork handed out a second one, and both branches rotated on undetected).
    @Test func reuseWithinGraceCreatesNoSecondRefreshToken() async throws {
        try await withAuthServer { client, clock, _ in
            let (r1, _, r2) = try await rotatedOnce(client)
            clock.advance(1)
            let again = try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1)], basic: web)
            #expect(again.status == .ok, "\(again.text)")
            #expect(again.json["refresh_token"] == nil, "a second live refresh token forks the family")
            let graceAccess = try #require(again.string("access_token"))
            #expect(try await isActive(client, graceAccess))
            #expect(try await isActive(client, r2))

            // The successor goes on rotating as the one line.
            let next = try await client.token([("grant_type", "refresh_token"), ("refresh_token", r2)], basic: web)
            #expect(next.status == .ok)
            #expect(next.string("refresh_token") != nil)
        }
    }

    /// After the grace, any superseded token revokes the whole family: the successor, and the access tokens issued
    /// within the grace too.
    @Test func reuseAfterGraceRevokesTheWholeFamilyIncludingTheSuccessor() async throws {
        try await withAuthServer { client, clock, _ in
            let (r1, rotated, r2) = try await rotatedOnce(client)
            clock.advance(1)
            let graceAccess = try #require(try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1)], basic: web).string("access_token"))
            let r3 = try #require(try await client.token([("grant_type", "refresh_token"), ("refresh_token", r2)], basic: web).string("refresh_token"))

            clock.advance(5)
            let reuse = try await client.token([("grant_type", "refresh_token"), ("refresh_token", r1)], basic: web)
            #expect(reuse.string("error") == "invalid_grant")
            for token in [r2, r3, graceAccess, try #require(rotated.string("access_token"))] {
                #expect(try await isActive(client, token) == false)
            }
            #expect(try await client.token([("grant_type", "refresh_token"), ("refresh_token", r3)], basic: web).string("error") == "invalid_grant")
        }
    }

    // MARK: Scopes

    /// Without `default_scopes`, a request without `scope` is refused; it no longer gets every registered scope.
    @Test func noScopeAndNoDefaultIsInvalidScope() async throws {
        try await withAuthServer(configure: { configuration in
            configuration.clients[0].defaultScopes = []  // demo-service
        }) { client, _, _ in
            let refused = try await client.token([("grant_type", "client_credentials")], basic: service)
            #expect(refused.status == .badRequest)
            #expect(refused.string("error") == "invalid_scope")
            #expect(refused.string("error_description")?.isEmpty == false)
            let named = try await client.token([("grant_type", "client_credentials"), ("scope", "orders:write")], basic: service)
            #expect(named.string("scope") == "orders:write")
        }
    }

    @Test func aRequestWithoutScopeGetsTheDefaultNotEverything() async throws {
        try await withAuthServer(configure: { configuration in
            configuration.clients[0].defaultScopes = ["orders:read"]
        }) { client, _, _ in
            let reply = try await client.token([("grant_type", "client_credentials")], basic: service)
            #expect(reply.status == .ok)
            #expect(reply.string("scope") == "orders:read")
        }
    }

    /// Reduces demo-web's registration to `orders:read` and lets the server's client cache expire.
    func reduceWebRegistration(_ store: SQLiteAuthStore, clock: ManualClock) async throws {
        var record = try #require(try await store.client(id: "demo-web"))
        record.scopes = ["orders:read"]
        record.defaultScopes = ["orders:read"]
        try await store.upsertClient(record)
        clock.advance(6)  // past the directory's and the token cache's 5 s
    }

    @Test func refreshTakesALaterReductionOfTheRegistrationIntoAccount() async throws {
        try await withAuthServer { client, clock, store in
            let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password"), ("scope", "orders:read orders:write")], basic: web)
            #expect(first.string("scope") == "orders:read orders:write")
            try await reduceWebRegistration(store, clock: clock)
            let refreshed = try await client.token([("grant_type", "refresh_token"), ("refresh_token", first.string("refresh_token") ?? "")], basic: web)
            #expect(refreshed.status == .ok, "\(refreshed.text)")
            #expect(refreshed.string("scope") == "orders:read")
        }
    }

    @Test func exchangeTakesALaterReductionOfTheRegistrationIntoAccount() async throws {
        try await withAuthServer { client, clock, store in
            let first = try await client.token([("grant_type", "password"), ("username", "bob"), ("password", "bob-password"), ("scope", "orders:read orders:write")], basic: web)
            let opaque = try #require(first.string("access_token"))
            try await reduceWebRegistration(store, clock: clock)
            let exchanged = try await exchange(client, opaque)
            #expect(exchanged.status == .ok, "\(exchanged.text)")
            #expect(exchanged.string("scope") == "orders:read")
        }
    }
}
