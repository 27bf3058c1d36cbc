import GatehouseConfiguration
import GatehouseObservability

/// The authorization server's metrics. Requests run as tasks on any thread (and the token fast path on the event
/// loops), so the counters are atomics, each increment one relaxed atomic add: no lock on the request path. Label
/// values are fixed sets (endpoints, grant types, RFC 6749 error codes, store operations), never a path, token,
/// user, client address or request id.
public final class AuthMetrics: Sendable {
    /// The `endpoint` label: the server's endpoints, anything else `other`.
    public enum Endpoint: Int, CaseIterable, Sendable {
        case token, introspect, revoke, authorize, login, consent, logout, jwks, metadata, healthz, other

        public init(path: String) {
            switch path {
            case "/token": self = .token
            case "/introspect": self = .introspect
            case "/revoke": self = .revoke
            case "/authorize": self = .authorize
            case "/login": self = .login
            case "/consent": self = .consent
            case "/logout": self = .logout
            case "/.well-known/jwks.json": self = .jwks
            case "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration": self = .metadata
            case "/healthz": self = .healthz
            default: self = .other
            }
        }

        public var name: String { "\(self)" }
    }

    /// The `error` label of `gatehouse_auth_token_errors_total`: RFC 6749 §5.2's codes, RFC 8693's
    /// `invalid_target`, and the two §4.1.2.1 codes the endpoint can also answer.
    public static let errorCodes = [
        "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope",
        "invalid_target", "access_denied", "server_error", "temporarily_unavailable", "other",
    ]

    /// The `operation` label of `gatehouse_auth_store_duration_seconds`: the store's calls.
    public enum StoreOperation: Int, CaseIterable, Sendable {
        case upsertClient, client, listClients, removeClient, removeConfigurationClients, upsertUser, user, removeUser, insertCode, code,
            redeemCode, recordCodeReplay, insertTokens, token, markRotated, revokeFamily, revokeToken, consentedScopes,
            saveConsent, purgeExpired, ping, revokeJWT, isJWTRevoked, tokenCounts

        public var name: String {
            let camel = "\(self)"
            var snake = ""
            for character in camel {
                if character.isUppercase { snake += "_" + character.lowercased() } else { snake.append(character) }
            }
            return snake
        }
    }

    static let grantTypes = GrantType.allCases
    static let statusClasses = 6

    let tokensIssued = AtomicCounters(count: AuthMetrics.grantTypes.count + 1)
    let tokenErrors = AtomicCounters(count: AuthMetrics.errorCodes.count)
    let requests = AtomicCounters(count: Endpoint.allCases.count * AuthMetrics.statusClasses)
    let requestDurations = AtomicHistograms(buckets: .requestDuration, labelSets: Endpoint.allCases.count)
    let loginFailures = AtomicCounters(count: 1)
    let storeDurations = AtomicHistograms(buckets: .requestDuration, labelSets: StoreOperation.allCases.count)

    public init() {}

    /// One answered request.
    public func request(_ endpoint: Endpoint, status: Int, nanoseconds: Int64) {
        requests.add(endpoint.rawValue * Self.statusClasses + min(max(status / 100, 0), 5))
        requestDurations.observe(endpoint.rawValue, nanoseconds: nanoseconds)
    }

    /// A token issued at the token endpoint, by its `grant_type` (an unknown one counts as `other`).
    public func tokenIssued(grantType: String?) {
        tokensIssued.add(Self.grantTypes.firstIndex { $0.rawValue == grantType } ?? Self.grantTypes.count)
    }

    /// An error answer of the token endpoint.
    public func tokenError(_ code: String) {
        tokenErrors.add(Self.errorCodes.firstIndex(of: code) ?? Self.errorCodes.count - 1)
    }

    /// A failed sign-in at the login page (wrong username or password, or held by the throttle).
    public func loginFailed() {
        loginFailures.add(0)
    }

    /// Times one store call.
    func store<T>(_ operation: StoreOperation, _ body: () async throws -> T) async rethrows -> T {
        try await storeDurations.time(operation.rawValue, body)
    }

    /// The Prometheus text of every family.
    public func render(into text: inout PrometheusText) {
        text.family("gatehouse_auth_tokens_issued_total", .counter, help: "Tokens issued at the token endpoint, by grant type.")
        for (index, grant) in Self.grantTypes.enumerated() {
            text.sample("gatehouse_auth_tokens_issued_total", [("grant_type", grant.rawValue)], tokensIssued[index])
        }
        text.family("gatehouse_auth_token_errors_total", .counter, help: "Error answers of the token endpoint, by RFC 6749 error code.")
        for (index, code) in Self.errorCodes.enumerated() {
            text.sample("gatehouse_auth_token_errors_total", [("error", code)], tokenErrors[index])
        }
        text.family("gatehouse_auth_requests_total", .counter, help: "Requests by endpoint and status class.")
        for endpoint in Endpoint.allCases {
            for statusClass in 1..<Self.statusClasses {
                let value = requests[endpoint.rawValue * Self.statusClasses + statusClass]
                guard value > 0 else { continue }
                text.sample("gatehouse_auth_requests_total", [("endpoint", endpoint.name), ("code", "\(statusClass)xx")], value)
            }
        }
        text.family("gatehouse_auth_request_duration_seconds", .histogram, help: "Time to answer a request, by endpoint.")
        for endpoint in Endpoint.allCases {
            requestDurations.render("gatehouse_auth_request_duration_seconds", endpoint.rawValue, labels: [("endpoint", endpoint.name)], into: &text, skipEmpty: true)
        }
        text.family("gatehouse_auth_login_failures_total", .counter, help: "Failed sign-ins at the login page.")
        text.sample("gatehouse_auth_login_failures_total", [], loginFailures[0])
        text.family("gatehouse_auth_store_duration_seconds", .histogram, help: "Time of store calls, by operation.")
        for operation in StoreOperation.allCases {
            storeDurations.render("gatehouse_auth_store_duration_seconds", operation.rawValue, labels: [("operation", operation.name)], into: &text, skipEmpty: true)
        }
    }
}
