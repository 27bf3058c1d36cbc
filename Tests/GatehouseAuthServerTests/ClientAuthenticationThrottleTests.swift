import Foundation
import GatehouseStore
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import GatehouseAuthServer

/// Failed client authentication is throttled per client id and per address (injected clock, no waiting).
@Suite struct ClientAuthenticationThrottleTests {
    @Test func perAddressAndPerClientKeysDelayAfterTheirAllowance() {
        let clock = ManualClock()
        let throttle = ClientAuthenticationThrottle(clock: clock)
        for _ in 0..<10 { throttle.recordFailure(clientID: nil, address: "10.0.0.1") }
        #expect(throttle.retryAfter(clientID: "svc", address: "10.0.0.1") == 1)  // the address: 10 free, then 1 s
        #expect(throttle.retryAfter(clientID: "svc", address: "10.0.0.2") == nil)  // another address is not held
        clock.advance(1)
        #expect(throttle.retryAfter(clientID: "svc", address: "10.0.0.1") == nil)

        // Guessing one client's secret from many addresses: 20 free, then 1 s doubling, capped at 60 s.
        for index in 0..<25 { throttle.recordFailure(clientID: "svc", address: "192.0.2.\(index)") }
        #expect(throttle.retryAfter(clientID: "svc", address: "198.51.100.1") == 32)
        for index in 0..<10 { throttle.recordFailure(clientID: "svc", address: "203.0.113.\(index)") }
        #expect(throttle.retryAfter(clientID: "svc", address: "198.51.100.1") == 60)
        #expect(throttle.retryAfter(clientID: "other", address: "198.51.100.1") == nil)
        clock.advance(900)  // the window forgets
        #expect(throttle.retryAfter(clientID: "svc", address: "198.51.100.1") == nil)
    }

    @Test func throttledCallersGetInvalidClientWithRetryAfterEvenWithTheRightSecret() async throws {
        try await withAuthServer { client, clock, _ in
            for _ in 0..<10 {
                let wrong = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "wrong-secret"))
                #expect(wrong.status == .unauthorized)
                #expect(wrong.string("error") == "invalid_client")
                #expect(wrong.headers[.retryAfter] == nil)
            }
            let throttled = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            #expect(throttled.status == .unauthorized)
            #expect(throttled.string("error") == "invalid_client")
            #expect(throttled.headers[.retryAfter] == "1")
            #expect(throttled.headers[.wwwAuthenticate] != nil)
            #expect(throttled.text.contains("demo-service-secret") == false)
            // The same address is held at introspection (answered from memory or not) and revocation too.
            let basic = "Basic " + Data("gatehouse-gateway:gatehouse-gateway-secret".utf8).base64EncodedString()
            let introspection = try await client.send(.post, "/introspect", headers: [.authorization: basic], form: [("token", "x")])
            #expect(introspection.status == .unauthorized)
            #expect(introspection.headers[.retryAfter] == "1")

            clock.advance(1)
            let allowed = try await client.token([("grant_type", "client_credentials")], basic: ("demo-service", "demo-service-secret"))
            #expect(allowed.status == .ok, "\(allowed.text)")
        }
    }
}
