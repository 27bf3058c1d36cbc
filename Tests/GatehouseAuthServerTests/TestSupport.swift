import Foundation
import GatehouseAuthServer
import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// A clock the test moves by hand.
final class ManualClock: AuthClock {
    private let current = NIOLockedValueBox(1_800_000_000)
    func now() -> Int { current.withLockedValue { $0 } }
    func advance(_ seconds: Int) { current.withLockedValue { $0 += seconds } }
}

/// Test configuration: the demo's clients and users, fast bcrypt, 2 s refresh grace.
func testConfiguration() throws -> AuthServerConfiguration {
    var configuration = try AuthServerConfiguration.parse(yaml: """
        issuer: http://127.0.0.1:9000
        tokens: {refresh_token_reuse_grace: 2s}
        login: {bcrypt_cost: 4}
        clients:
          - {id: demo-service, secret: demo-service-secret, grants: [client_credentials], scopes: [orders:read, orders:write], default_scopes: [orders:read, orders:write]}
          - {id: demo-web, name: Demo web, secret: demo-web-secret, grants: [authorization_code, refresh_token, password], scopes: [orders:read, orders:write], default_scopes: [orders:read, orders:write], redirect_uris: ['http://127.0.0.1:8081/callback']}
          - {id: demo-spa, type: public, grants: [authorization_code, refresh_token, implicit], scopes: [orders:read, orders:write], default_scopes: [orders:read, orders:write], redirect_uris: ['http://127.0.0.1:8081/spa/callback']}
          - {id: no-pkce, secret: no-pkce-secret, grants: [authorization_code], scopes: [orders:read], default_scopes: [orders:read], redirect_uris: ['https://app.example/cb']}
          - {id: demo-cli, type: public, application_type: native, grants: [authorization_code], scopes: [orders:read], default_scopes: [orders:read], redirect_uris: ['http://127.0.0.1:8765/cli/callback']}
          - {id: gatehouse-gateway, secret: gatehouse-gateway-secret, grants: ['urn:ietf:params:oauth:grant-type:token-exchange'], introspect: true}
        users:
          - {username: alice, password: alice-password}
          - {username: bob, password: bob-password}
        """)
    configuration.pkce.requireForConfidentialClients = true
    return configuration
}

/// Runs a real authorization server on a loopback port with a fresh SQLite store, and a live HTTP client.
func withAuthServer(
    configure: (inout AuthServerConfiguration) -> Void = { _ in },
    passwordAlgorithm: any PasswordAlgorithm = BcryptAlgorithm(),
    passwordHashingPool: NIOThreadPool? = nil,
    inspect: (AuthorizationServer) -> Void = { _ in },
    wrapStore: (SQLiteAuthStore) -> any AuthStore = { $0 },
    loginThrottle: (any LoginThrottleStore)? = nil,
    _ body: @Sendable (any TestClientProtocol, ManualClock, SQLiteAuthStore) async throws -> Void
) async throws {
    var template = Array("/tmp/gatehouse-auth-XXXXXX".utf8CString)
    let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var configuration = try testConfiguration()
    configure(&configuration)
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let store = try await SQLiteAuthStore.open(.init(path: directory + "/auth.sqlite", fullSync: false), logger: logger)
    let clock = ManualClock()
    let keys = KeyManager.forServer(configuration, dataDirectory: directory, clock: clock, logger: logger)
    try await keys.reload()
    let server = try AuthorizationServer(
        configuration: configuration, store: wrapStore(store), keys: keys, clock: clock, logger: logger, passwordAlgorithm: passwordAlgorithm,
        passwordHashingPool: passwordHashingPool, loginThrottle: loginThrottle
    )
    try await server.registerConfiguredClientsAndUsers()
    inspect(server)
    let app = server.application(host: "127.0.0.1", port: 0)
    do {
        try await app.test(.live) { client in try await body(client, clock, store) }
    } catch {
        try? await store.close()
        throw error
    }
    try await store.close()
}

/// A parsed response.
struct Reply: Sendable {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let text: String

    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    func string(_ key: String) -> String? { json[key] as? String }

    var location: String? { headers[.location] }

    /// The value of a `Set-Cookie` for `name`.
    func cookie(_ name: String) -> String? {
        headers[values: .setCookie].lazy.compactMap { field -> String? in
            guard field.hasPrefix(name + "=") else { return nil }
            return String(field.dropFirst(name.count + 1).prefix { $0 != ";" })
        }.first
    }

    /// A hidden form field in an HTML page.
    func hidden(_ name: String) -> String? {
        guard let range = text.range(of: "name=\"\(name)\" value=\"") else { return nil }
        return String(text[range.upperBound...].prefix { $0 != "\"" })
    }
}

/// The headers and body of a test request: a form body, the session cookie.
private func requestParts(headers: HTTPFields, form: [(String, String)]?, cookie: String?) -> (HTTPFields, ByteBuffer?) {
    var headers = headers
    var body: ByteBuffer?
    if let form {
        headers[.contentType] = "application/x-www-form-urlencoded"
        body = ByteBuffer(string: FormParameters.encode(form.map { ($0.0, Optional($0.1)) }))
    }
    if let cookie { headers[.cookie] = "\(AuthorizationServer.sessionCookie)=\(cookie)" }
    return (headers, body)
}

private func basicAuthorization(_ basic: (String, String)?) -> HTTPFields {
    guard let (id, secret) = basic else { return [:] }
    return [.authorization: "Basic " + Data("\(id):\(secret)".utf8).base64EncodedString()]
}

extension TestClientProtocol {
    func send(_ method: HTTPRequest.Method, _ uri: String, headers: HTTPFields = [:], form: [(String, String)]? = nil, cookie: String? = nil) async throws -> Reply {
        let (headers, body) = requestParts(headers: headers, form: form, cookie: cookie)
        return try await execute(uri: uri, method: method, headers: headers, body: body) { response in
            Reply(status: response.status, headers: response.headers, text: String(buffer: response.body))
        }
    }

    func token(_ form: [(String, String)], basic: (String, String)? = nil) async throws -> Reply {
        try await send(.post, "/token", headers: basicAuthorization(basic), form: form)
    }

    /// A client that opens a connection for each request. The live test client has one connection, on which the
    /// server answers one request at a time, so requests sent concurrently through it never overlap at the server.
    var perRequestConnections: FreshConnectionClient { FreshConnectionClient(port: port ?? 0) }
}

/// Sends each request on a new connection (see `perRequestConnections`).
struct FreshConnectionClient: Sendable {
    let port: Int

    func send(_ method: HTTPRequest.Method, _ uri: String, headers: HTTPFields = [:], form: [(String, String)]? = nil, cookie: String? = nil) async throws -> Reply {
        let (headers, body) = requestParts(headers: headers, form: form, cookie: cookie)
        let request = TestClient.Request(uri, method: method, authority: "localhost", headers: headers, body: body)
        return try await TestClient.withClient(host: "localhost", port: port) { client in
            let response = try await client.execute(request)
            return Reply(status: response.status, headers: response.headers, text: String(buffer: response.body ?? ByteBuffer()))
        }
    }

    func token(_ form: [(String, String)], basic: (String, String)? = nil) async throws -> Reply {
        try await send(.post, "/token", headers: basicAuthorization(basic), form: form)
    }
}

/// Query or fragment parameters of a redirect URL.
func parameters(of url: String, fragment: Bool = false) -> [String: String] {
    let separator: Character = fragment ? "#" : "?"
    guard let start = url.firstIndex(of: separator) else { return [:] }
    let part = url[url.index(after: start)...].prefix { fragment || $0 != "#" }
    return (try? FormParameters.parse(part).values) ?? [:]
}

let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

/// A token request on a connection of its own: the live test client has one connection, which answers requests
/// in turn, so requests meant to run at the same time each need their own. The client's read timeout (15 s)
/// bounds a request that never gets an answer.
func tokenOnItsOwnConnection(port: Int?, _ form: [(String, String)], basic: (String, String)) async throws -> Reply {
    let port = try #require(port)
    return try await TestClient.withClient(host: "localhost", port: port) { connection in
        let headers: HTTPFields = [
            .authorization: "Basic " + Data("\(basic.0):\(basic.1)".utf8).base64EncodedString(),
            .contentType: "application/x-www-form-urlencoded",
        ]
        let body = ByteBuffer(string: FormParameters.encode(form.map { ($0.0, Optional($0.1)) }))
        let response = try await connection.execute(.init("/token", method: .post, headers: headers, body: body))
        return Reply(status: response.head.status, headers: response.head.headerFields, text: response.body.map { String(buffer: $0) } ?? "")
    }
}

/// Log messages kept for a test to wait on or assert (what a component says it did, e.g. a retry), never printed.
final class RecordedLogs: Sendable {
    let entries = NIOLockedValueBox<[String]>([])

    var messages: [String] { entries.withLockedValue { $0 } }

    /// How many messages were exactly `message`.
    func count(_ message: String) -> Int { entries.withLockedValue { $0.lazy.filter { $0 == message }.count } }

    /// A logger (every level) whose messages land here.
    func logger(label: String = "test") -> Logger {
        var logger = Logger(label: label) { _ in Handler(logs: self) }
        logger.logLevel = .trace
        return logger
    }

    struct Handler: LogHandler {
        let logs: RecordedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            logs.entries.withLockedValue { $0.append("\(event.message)") }
        }
    }
}
