import Foundation
import GatehouseConfiguration
import GatehousePolicies
import GatehouseServiceAuth
import GatehouseStore
import GatehouseTestSupport
import GatehouseTokens
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Testing

@testable import GatehouseAuthServer
@testable import GatehouseGateway

/// The gateway's authorization-server client against a real authorization server on a loopback port.
@Suite struct GatewayClientTests {
    static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }

    /// A real authorization server (not started yet: run `application`) on a free port, its store, and a cleanup.
    struct LocalAuthorizationServer {
        let port: Int
        let configuration: AuthServerConfiguration
        let server: AuthorizationServer
        let store: SQLiteAuthStore
        let directory: String
        let logger: Logger

        /// `issuer` nil: http://127.0.0.1:<port>.
        static func make(issuer: String? = nil) async throws -> LocalAuthorizationServer {
            let port = try GatewayClientTests.freePort()
            var configuration = try testConfiguration()
            configuration.issuer = issuer ?? "http://127.0.0.1:\(port)"
            var template = Array("/tmp/gatehouse-gwclient-XXXXXX".utf8CString)
            let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let store = try await SQLiteAuthStore.open(.init(path: directory + "/auth.sqlite", fullSync: false), logger: logger)
            let keys = KeyManager.forServer(configuration, dataDirectory: directory, logger: logger)
            try await keys.reload()
            let server = try AuthorizationServer(configuration: configuration, store: store, keys: keys, logger: logger)
            try await server.registerConfiguredClientsAndUsers()
            return LocalAuthorizationServer(port: port, configuration: configuration, server: server, store: store, directory: directory, logger: logger)
        }

        func serviceGroup() -> ServiceGroup {
            ServiceGroup(configuration: .init(services: [.init(service: server.application(host: "127.0.0.1", port: port))], logger: logger))
        }

        /// An opaque access token from the client_credentials grant.
        func issueToken(scope: String) async throws -> String {
            let issued = try await SimpleHTTPClient.send(
                host: "127.0.0.1", port: port, method: .POST, path: "/token",
                headers: ["Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + Data("demo-service:demo-service-secret".utf8).base64EncodedString()],
                body: "grant_type=client_credentials&scope=\(scope)", timeout: .seconds(2), group: MultiThreadedEventLoopGroup.singleton
            )
            return try #require((try JSONSerialization.jsonObject(with: Data(issued.body.utf8)) as? [String: Any])?["access_token"] as? String)
        }

        func close() async throws {
            try await store.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// Runs `body` while `group` runs, then shuts the group down and waits for it, however `body` ends: normally, by a
    /// throw, or by an early `return` after `Issue.record`. (With the shutdown written as the body's last lines, an
    /// early return left the server running and the test hung instead of failing.) `body` may call `stop` itself to
    /// check what happens once the server is gone.
    static func running(_ group: ServiceGroup, _ body: (_ stop: () async throws -> Void) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            func stop() async throws {
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            do {
                try await body(stop)
            } catch {
                try? await stop()
                throw error
            }
            try await stop()
        }
    }

    @Test func discoversExchangesAndFailsClosed() async throws {
        let local = try await LocalAuthorizationServer.make()
        let (port, configuration) = (local.port, local.configuration)
        let client = AuthorizationServerClient(issuer: configuration.issuer, clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret", timeout: .seconds(2))
        #expect(await client.exchange("anything") == .unavailable("the authorization server has not been discovered"))

        // Discovery starts before the server is up and keeps retrying until it answers: the server starts only once
        // discovery has been refused twice (its warnings say so), so what follows is a retry's success.
        let logs = RecordedLogs()
        let discovery = Task { try await client.discover(initial: .milliseconds(20), maximum: .milliseconds(100), logger: logs.logger()) }
        try #require(await eventually { logs.count("authorization server not reachable yet; retrying") >= 2 }, "discovery never retried: \(logs.messages)")
        let group = local.serviceGroup()
        try await Self.running(group) { _ in
            let metadata = try await discovery.value
            #expect(metadata.issuer == "http://127.0.0.1:\(port)")
            #expect(metadata.tokenEndpoint == "http://127.0.0.1:\(port)/token")

            // A real opaque token, exchanged for a JWT that verifies against the published keys.
            let opaque = try await local.issueToken(scope: "orders:read")
            guard case .jwt(let jwt, let expiresAt) = await client.exchange(opaque) else {
                Issue.record("expected a JWT")
                return
            }
            // The exchanged JWT lives tokens.exchange_jwt_lifetime (120 s by default), not the opaque token's hour.
            #expect(expiresAt > Date().timeIntervalSince1970 + 100)
            #expect(expiresAt <= Date().timeIntervalSince1970 + 121)
            let (jwks, maxAge) = try await client.fetchJWKS()
            #expect(maxAge == 300)
            let claims = try await JWTVerifier(jwksJSON: jwks).verifyAccessToken(jwt, policy: .init(issuers: [configuration.issuer], audiences: []), now: Int(Date().timeIntervalSince1970))
            #expect(claims.client_id == "demo-service")
            #expect(claims.scope == "orders:read")

            // Bad tokens are inactive, not errors.
            #expect(await client.exchange("not-a-token") == .inactive)
            #expect(await client.exchange(TokenLocator.make(id: 4242).token) == .inactive)

        }
        // The server is gone: fail closed.
        guard case .unavailable = await client.exchange(TokenLocator.make(id: 1).token) else {
            Issue.record("expected unavailable")
            return
        }
        try await local.close()
    }

    /// Resolves an answer of the validator (waiting for a miss).
    func outcome(_ answer: TokenValidator.Answer) async throws -> TokenValidator.Outcome {
        switch answer {
        case .cached(let token, _): .valid(token)
        case .now(let outcome): outcome
        case .later(let future): try await future.get()
        }
    }

    /// POSTs a form to the local server; the response.
    func post(_ local: LocalAuthorizationServer, _ path: String, credentials: String, body: String, accept: String? = nil) async throws -> SimpleHTTPResponse {
        var headers: HTTPHeaders = ["Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + Data(credentials.utf8).base64EncodedString()]
        if let accept { headers.add(name: "Accept", value: accept) }
        return try await SimpleHTTPClient.send(host: "127.0.0.1", port: local.port, method: .POST, path: path, headers: headers, body: body, timeout: .seconds(2), group: MultiThreadedEventLoopGroup.singleton)
    }

    /// Runs a local server, waits until it answers, runs `body`, and stops the server.
    func serving(_ body: @Sendable (LocalAuthorizationServer) async throws -> Void) async throws {
        let local = try await LocalAuthorizationServer.make()
        let group = local.serviceGroup()
        try await Self.running(group) { _ in
            let answered = await eventually(interval: .milliseconds(20)) {
                (try? await SimpleHTTPClient.send(host: "127.0.0.1", port: local.port, method: .GET, path: "/healthz", headers: [:], body: nil, timeout: .seconds(1), group: MultiThreadedEventLoopGroup.singleton)) != nil
            }
            try #require(answered, "the local authorization server never answered /healthz")
            try await body(local)
        }
        try await local.close()
    }

    @Test func introspectionFromMemoryAnswersLikeTheRouter() async throws {
        try await serving { local in
            let token = try await local.issueToken(scope: "orders:read")
            let gateway = "gatehouse-gateway:gatehouse-gateway-secret"
            let memory = local.server.tokens.answeredFromMemory
            // The first answer loads the caches through the router; the second comes from memory, byte for byte the same.
            let first = try await post(local, "/introspect", credentials: gateway, body: "token=\(token)")
            let second = try await post(local, "/introspect", credentials: gateway, body: "token=\(token)")
            #expect(first.status == 200)
            #expect(first.body.contains("\"active\":true"))
            #expect(second.body == first.body)
            #expect(memory.withLockedValue { $0 } == 1)
            for name in ["content-type", "cache-control", "pragma", "server"] {
                #expect(second.headers.first(name: name) == first.headers.first(name: name), "header \(name)")
            }
            #expect(second.headers.first(name: "date")?.hasSuffix(" GMT") == true)
            #expect(second.headers.first(name: "x-request-id") != nil)

            // Errors and the signed form are the router's: same status and shape as before.
            let wrongSecret = try await post(local, "/introspect", credentials: "gatehouse-gateway:wrong", body: "token=\(token)")
            #expect(wrongSecret.status == 401)
            #expect(wrongSecret.body.contains("invalid_client"))
            let signed = try await post(local, "/introspect", credentials: gateway, body: "token=\(token)", accept: "application/token-introspection+jwt")
            #expect(signed.headers.first(name: "content-type") == "application/token-introspection+jwt")
            #expect(memory.withLockedValue { $0 } == 1)

            // Revocation reaches the memory path at once.
            let revoked = try await post(local, "/revoke", credentials: "demo-service:demo-service-secret", body: "token=\(token)")
            #expect(revoked.status == 200)
            let after = try await post(local, "/introspect", credentials: gateway, body: "token=\(token)")
            #expect(after.body == "{\"active\":false}")
        }
    }

    @Test func tokenExchangeFromMemoryAnswersLikeTheRouter() async throws {
        try await serving { local in
            let token = try await local.issueToken(scope: "orders:read")
            let gateway = "gatehouse-gateway:gatehouse-gateway-secret"
            let exchange = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token="
            let memory = local.server.tokens.exchangedFromMemory
            // The first exchange loads the caches through the router; later ones come from memory.
            let first = try await post(local, "/token", credentials: gateway, body: exchange + token)
            #expect(first.status == 200)
            #expect(memory.withLockedValue { $0 } == 0)
            let second = try await post(local, "/token", credentials: gateway, body: exchange + token)
            #expect(second.status == 200)
            #expect(memory.withLockedValue { $0 } == 1)
            for name in ["content-type", "cache-control", "pragma"] {
                #expect(second.headers.first(name: name) == first.headers.first(name: name), "header \(name)")
            }
            let json = try #require(try JSONSerialization.jsonObject(with: Data(second.body.utf8)) as? [String: Any])
            #expect(json["issued_token_type"] as? String == "urn:ietf:params:oauth:token-type:jwt")
            #expect(json["token_type"] as? String == "Bearer")
            let jwt = try #require(json["access_token"] as? String)
            // Signed here, on the event loop, it verifies against the published keys like any other.
            let verifier = try await JWTVerifier(jwksJSON: local.server.keys.jwks)
            let policy = JWTVerificationPolicy(issuers: [local.configuration.issuer], audiences: [], clockSkew: 60)
            let claims = try await verifier.verifyAccessToken(jwt, policy: policy, now: Int(Date().timeIntervalSince1970))
            #expect(claims.scopes == ["orders:read"])
            #expect(claims.client_id == "demo-service")
            // A request the reuse cache has not seen (an explicit audience) is signed here too.
            let audience = local.configuration.tokens.jwtAudience
            let third = try await post(local, "/token", credentials: gateway, body: exchange + token + "&audience=" + FormParameters.encode(audience))
            #expect(third.status == 200)
            #expect(memory.withLockedValue { $0 } == 2)
            let thirdJWT = try #require((try JSONSerialization.jsonObject(with: Data(third.body.utf8)) as? [String: Any])?["access_token"] as? String)
            #expect(thirdJWT != jwt)
            let thirdClaims = try await verifier.verifyAccessToken(thirdJWT, policy: policy, now: Int(Date().timeIntervalSince1970))
            #expect(thirdClaims.aud == [audience])

            // Errors stay the router's: a narrower scope than granted is fine, a wider one is invalid_scope.
            let wider = try await post(local, "/token", credentials: gateway, body: exchange + token + "&scope=orders%3Awrite")
            #expect(wider.status == 400)
            #expect(wider.body.contains("invalid_scope"))
            #expect(memory.withLockedValue { $0 } == 2)
            // Revocation reaches the memory path at once.
            let revoked = try await post(local, "/revoke", credentials: "demo-service:demo-service-secret", body: "token=\(token)")
            #expect(revoked.status == 200)
            let after = try await post(local, "/token", credentials: gateway, body: exchange + token)
            #expect(after.status == 400)
            #expect(after.body.contains("invalid_request"))
        }
    }

    /// The per-connection memo of a caller's authentication holds only while the directory's record does, only for
    /// the same Authorization value, and never with form credentials.
    @Test func rememberedCallerAuthenticationExpiresWithTheDirectory() async throws {
        try await withAuthServer { _, clock, store in
            let directory = ClientDirectory(store: store, clock: clock)
            let authenticator = ClientAuthenticator(directory: directory, throttle: ClientAuthenticationThrottle(clock: clock))
            let basic = "Basic " + Data("gatehouse-gateway:gatehouse-gateway-secret".utf8).base64EncodedString()
            let wrong = "Basic " + Data("gatehouse-gateway:wrong".utf8).base64EncodedString()
            var memo: ClientAuthenticator.Memo?
            // Not loaded yet: only the store can say.
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo) == nil)
            _ = try await directory.client(id: "gatehouse-gateway")
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo)?.id == "gatehouse-gateway")
            #expect(memo != nil)
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo)?.id == "gatehouse-gateway")
            // Other credentials are checked, not remembered ones.
            #expect(authenticator.authenticateFromMemory(authorization: wrong, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo) == nil)
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(["client_secret": "x"]), remoteAddress: "127.0.0.1", memo: &memo) == nil)
            // An invalidated directory (clients changed) voids the memo.
            directory.invalidate()
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo) == nil)
            // So does the expiry of the directory's record.
            _ = try await directory.client(id: "gatehouse-gateway")
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo)?.id == "gatehouse-gateway")
            clock.advance(5)
            #expect(authenticator.authenticateFromMemory(authorization: basic, form: FormParameters(), remoteAddress: "127.0.0.1", memo: &memo) == nil)
        }
    }

    @Test func httpDatesAreIMFFixdates() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")  // RFC 9110 §5.6.7's example
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
    }

    /// Runs a command; its exit status.
    static func run(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    @Test func httpsAuthorizationServerWithAPrivateCA() async throws {
        // A private CA and a certificate for localhost, made with the openssl CLI.
        let directory = NSTemporaryDirectory() + "gatehouse-https-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (ca, caKey, cert, key, csr, ext) = ("\(directory)/ca.pem", "\(directory)/ca.key", "\(directory)/server.pem", "\(directory)/server.key", "\(directory)/server.csr", "\(directory)/ext.cnf")
        try "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n".write(toFile: ext, atomically: true, encoding: .utf8)
        #expect(try Self.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", caKey, "-out", ca, "-days", "1", "-subj", "/CN=Gatehouse test CA"]) == 0)
        #expect(try Self.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"]) == 0)
        #expect(try Self.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext]) == 0)

        // The authorization server speaks http on loopback; a gateway with a TLS listener in front of it is what
        // clients reach, under the https issuer.
        let gatewayPort = try Self.freePort()
        let issuer = "https://localhost:\(gatewayPort)"
        let local = try await LocalAuthorizationServer.make(issuer: issuer)
        let configuration = try GatewayConfiguration.parse(yaml: """
            listeners:
              - {host: 127.0.0.1, port: \(gatewayPort), tls: {certificate: \(cert), private_key: \(key), http2: false}}
            event_loop_threads: 1
            clusters:
              - {name: auth, targets: ["http://127.0.0.1:\(local.port)"]}
            routes:
              - {name: all, match: {path_prefix: /}, cluster: auth}
            """)
        let gateway = GatewayServer(
            settings: GatewayCompiler.settings(configuration, defaultThreads: 1), gateway: GatewayCompiler().compile(configuration), logger: local.logger
        )
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: local.server.application(host: "127.0.0.1", port: local.port)), .init(service: gateway)], logger: local.logger)
        )
        try await Self.running(group) { _ in
            try #require(await eventually { gateway.isReady }, "the gateway never became ready")

            let trusted = AuthorizationServerClient(issuer: issuer, clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret", trust: .caFile(ca))
            let metadata = try await trusted.discover(initial: .milliseconds(20), maximum: .milliseconds(100), logger: local.logger)
            #expect(metadata.tokenEndpoint == issuer + "/token")
            let opaque = try await local.issueToken(scope: "orders:read")
            guard case .jwt = await trusted.exchange(opaque) else {
                Issue.record("expected the exchange over https to work")
                return
            }
            #expect(try await trusted.fetchJWKS().json.contains("\"keys\""))

            // The system trust store does not know the private CA: the certificate is refused.
            let untrusted = AuthorizationServerClient(issuer: issuer, clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret")
            await #expect(throws: (any Error).self) { _ = try await untrusted.fetchMetadata() }
            // Nor does a certificate for localhost pass for another name (the same server, reached by its IP).
            await #expect(throws: (any Error).self) {
                _ = try await SimpleHTTPClient.get(url: "https://127.0.0.1:\(gatewayPort)/.well-known/oauth-authorization-server", timeout: .seconds(2), group: MultiThreadedEventLoopGroup.singleton, trust: .caFile(ca))
            }
        }
        try await local.close()
    }

    @Test func unknownTokensBeyondTheFetchLimitAreShedNotQueued() async throws {
        let settings = GatewayConfiguration.AuthorizationServer(issuer: "http://127.0.0.1:1", clientID: "gatehouse-gateway", clientSecret: "x")
        let validator = TokenValidator(settings: settings, logger: Logger(label: "test"), maxConcurrentFetches: 0)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        guard case .now(.unavailable) = try await loop.submit({ validator.validate("some-opaque-token", kind: .opaque, on: loop) }).get() else {
            Issue.record("expected an immediate 503")
            return
        }
        #expect(validator.statistics.shed == 1)
        #expect(validator.statistics.exchanges == 0)
        // Nothing was cached: the next request for it is decided afresh (and shed again).
        guard case .now(.unavailable) = try await loop.submit({ validator.validate("some-opaque-token", kind: .opaque, on: loop) }).get() else {
            Issue.record("expected an immediate 503")
            return
        }
        #expect(validator.statistics.shed == 2)
        #expect(validator.statistics.entries == 0)
    }

    @Test func introspectionJWTModeVerifiesAndForwardsTheSignedResponse() async throws {
        let local = try await LocalAuthorizationServer.make()
        let settings = GatewayConfiguration.AuthorizationServer(
            issuer: local.configuration.issuer, clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret", exchange: .introspectionJWT,
            discoveryRetry: .init(initialMilliseconds: 20, maxMilliseconds: 100)
        )
        let validator = TokenValidator(settings: settings, logger: local.logger)
        validator.start()
        defer { validator.stop() }
        let group = local.serviceGroup()
        try await Self.running(group) { _ in
            try #require(await eventually { validator.isReady }, "the validator never discovered the authorization server")
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let opaque = try await local.issueToken(scope: "orders:read")
            guard case .valid(let token) = try await outcome(try await loop.submit({ validator.validate(opaque, kind: .opaque, on: loop) }).get()) else {
                Issue.record("expected the token to be active")
                return
            }
            #expect(token.scopes == ["orders:read"])
            #expect(token.issuer == local.configuration.issuer)
            #expect(try JWSHeader(token: token.jwt).typ == "token-introspection+jwt")
            #expect(validator.statistics.exchanges == 1)
            #expect(try await outcome(try await loop.submit({ validator.validate("not-a-token", kind: .opaque, on: loop) }).get()) == .invalid("the token is not active"))

            // A backend behind a gateway in this mode verifies the forwarded response with the same library.
            let backend = ServiceTokenVerifier(
                configuration: .init(jwksURL: local.configuration.issuer + "/.well-known/jwks.json", issuer: local.configuration.issuer, audiences: [local.configuration.tokens.jwtAudience])
            )
            let claims = try await backend.verify(authorization: ["Bearer " + token.jwt], requiring: .init(allOf: ["orders:read"])).get()
            #expect(claims.client_id == "demo-service")
            var parts = token.jwt.split(separator: ".").map(String.init)
            parts[1] = Base64URL.encode(Array(String(decoding: Base64URL.decode(parts[1])!, as: UTF8.self).replacingOccurrences(of: "orders:read", with: "orders:admin").utf8))
            guard case .failure(let rejection) = await backend.verify(authorization: ["Bearer " + parts.joined(separator: ".")]) else {
                Issue.record("a tampered response must not verify")
                return
            }
            #expect(rejection.code == .invalidToken)
        }
        try await local.close()
    }

    @Test func validatorCachesSharesExchangesAndFailsClosed() async throws {
        let local = try await LocalAuthorizationServer.make()
        let settings = GatewayConfiguration.AuthorizationServer(
            issuer: local.configuration.issuer, clientID: "gatehouse-gateway", clientSecret: "gatehouse-gateway-secret",
            discoveryRetry: .init(initialMilliseconds: 20, maxMilliseconds: 100)
        )
        let validator = TokenValidator(settings: settings, logger: local.logger)
        validator.start()
        defer { validator.stop() }
        let group = local.serviceGroup()
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        try await Self.running(group) { stop in
            try #require(await eventually { validator.isReady }, "the validator never discovered the authorization server")
            let opaque = try await local.issueToken(scope: "orders:read")

            // 400 concurrent requests on two event loops with one new token: one exchange, the rest wait for it.
            let answers = (0..<400).map { index in
                let loop = loops.next()
                return loop.submit { validator.validate(opaque, kind: .opaque, on: loop) }
            }
            var jwt: String?
            for answer in answers {
                guard case .valid(let token) = try await outcome(try await answer.get()) else {
                    Issue.record("expected a valid token")
                    return
                }
                #expect(token.scopes == ["orders:read"])
                #expect(token.issuer == local.configuration.issuer)
                jwt = token.jwt
            }
            #expect(validator.statistics.exchanges == 1)
            #expect(validator.statistics.cache.misses == 1)

            // Now cached: answered at once, on the caller's loop.
            let loop = loops.next()
            guard case .cached(_, let until) = try await loop.submit({ validator.validate(opaque, kind: .opaque, on: loop) }).get() else {
                Issue.record("expected a synchronous hit")
                return
            }
            // The cache vouches for it at most `cache.max_ttl` from now (what a connection may remember it for).
            #expect(until > validator.now() && until <= validator.now() + Double(settings.cache.maxTTLMilliseconds) / 1000)

            // The JWT itself is the phantom token minted for the gateway's backends (act.sub = the gateway's client):
            // presented as a client's token it is refused, locally (no exchange); a tampered copy does not verify at
            // all, and is remembered as bad.
            let exchangesBefore = validator.statistics.exchanges
            #expect(
                try await outcome(try await loop.submit({ validator.validate(jwt!, kind: .jwt, on: loop) }).get())
                    == .invalid("the token was issued for the gateway's backends and is not accepted from clients")
            )
            var parts = jwt!.split(separator: ".").map(String.init)
            let payload = String(decoding: Base64URL.decode(parts[1])!, as: UTF8.self).replacingOccurrences(of: "orders:read", with: "orders:write")
            parts[1] = Base64URL.encode(Array(payload.utf8))
            let tampered = parts.joined(separator: ".")
            #expect(try await outcome(try await loop.submit({ validator.validate(tampered, kind: .jwt, on: loop) }).get()) == .invalid("the token's signature does not verify"))
            guard case .now(.invalid) = try await loop.submit({ validator.validate(tampered, kind: .jwt, on: loop) }).get() else {
                Issue.record("expected a negative cache hit")
                return
            }
            #expect(validator.statistics.exchanges == exchangesBefore)

            // An unknown opaque token is inactive (exchanged once, then remembered).
            #expect(try await outcome(try await loop.submit({ validator.validate("not-a-real-token", kind: .opaque, on: loop) }).get()) == .invalid("the token is not active"))
            #expect(validator.statistics.cache.negativeHits >= 1)

            // Per-route checks on the validated token.
            guard case .cached(let token, _) = try await loop.submit({ validator.validate(opaque, kind: .opaque, on: loop) }).get() else {
                Issue.record("expected a synchronous hit")
                return
            }
            func route(
                mode: GatewayConfiguration.Route.Auth.Mode = .any, scopes: ScopeRequirement = .init(allOf: ["orders:read"]),
                audiences: Set<String> = [local.configuration.tokens.jwtAudience], issuers: Set<String> = [local.configuration.issuer]
            ) -> RouteAuthorization {
                RouteAuthorization(mode: mode, scopes: scopes, audiences: audiences, issuers: issuers, realm: "api", validator: validator, forwardHeader: "Authorization")
            }
            #expect(route().check(token) == nil)
            #expect(route().forwardValue(token) == "Bearer " + token.jwt)
            #expect(route(scopes: .init(allOf: ["orders:write"])).check(token) == BearerChallenge(realm: "api", error: .insufficientScope, description: "the token lacks a required scope", scope: "orders:write"))
            #expect(route(scopes: .init(anyOf: ["orders:write", "orders:read"])).check(token) == nil)
            #expect(route(audiences: ["https://elsewhere.example"]).check(token)?.error == .invalidToken)
            #expect(route(issuers: ["https://other-issuer.example"]).check(token)?.error == .invalidToken)
            #expect(route(mode: .opaque).kind(of: token.jwt) == .failure(route().challenge(.invalidToken, "this route takes opaque access tokens, not JWTs")))
            #expect(route(mode: .jwt).kind(of: opaque) == .failure(route().challenge(.invalidToken, "this route takes JWT access tokens")))
            #expect(route(mode: .any).kind(of: opaque) == .success(.opaque))

            let uncached = try await local.issueToken(scope: "orders:read")
            try await stop()

            // The authorization server is gone: the cached token still passes, a new one fails closed (not cached).
            guard case .cached = try await loop.submit({ validator.validate(opaque, kind: .opaque, on: loop) }).get() else {
                Issue.record("expected the cached token to pass")
                return
            }
            guard case .unavailable = try await outcome(try await loop.submit({ validator.validate(uncached, kind: .opaque, on: loop) }).get()) else {
                Issue.record("expected unavailable")
                return
            }
            guard case .later(let retried) = try await loop.submit({ validator.validate(uncached, kind: .opaque, on: loop) }).get() else {
                Issue.record("a failed exchange must not be cached")
                return
            }
            guard case .unavailable = try await retried.get() else {
                Issue.record("expected unavailable again")
                return
            }
        }
        try await loops.shutdownGracefully()
        try await local.close()
    }

    @Test func discoveryRefusesAMixedUpIssuer() async throws {
        let client = AuthorizationServerClient(issuer: "http://127.0.0.1:1", clientID: "x", clientSecret: "y", timeout: .milliseconds(200))
        await #expect(throws: (any Error).self) { _ = try await client.fetchMetadata() }
        #expect(SimpleHTTPClient.maxAge("public, max-age=300") == 300)
        #expect(SimpleHTTPClient.maxAge("no-store") == nil)
        #expect(AuthorizationServerClient.formEncode("a b&c=d:é") == "a%20b%26c%3Dd%3A%C3%A9")
    }
}
