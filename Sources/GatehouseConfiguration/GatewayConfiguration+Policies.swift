import Foundation
import GatehouseTokens
import Yams

// Fault tolerance (`priority`, `priority_overrides`, `rate_limits`, `circuit_breaker` on a route; `admission` on a
// cluster): the settings only. The state machines that apply them live in GatehousePolicies.
extension GatewayConfiguration {
    /// A request's priority class: under saturation `sheddable` is refused first and `critical` last.
    public enum PriorityClass: String, Sendable, Equatable, CaseIterable {
        case critical, normal, sheddable
    }

    /// Raises (or lowers) a request's priority by who it is for, after the token check. The first override whose
    /// conditions all hold wins; an override needs at least one condition.
    public struct PriorityOverride: Sendable, Equatable {
        /// The token's `client_id` is one of these. Any when empty.
        public var clientIDs: [String] = []
        /// The token carries at least one of these scopes. Any when empty.
        public var scopesAnyOf: [String] = []
        public var priority: PriorityClass

        public init(clientIDs: [String] = [], scopesAnyOf: [String] = [], priority: PriorityClass) {
            self.clientIDs = clientIDs
            self.scopesAnyOf = scopesAnyOf
            self.priority = priority
        }
    }

    /// One rate limit of a route (`rate_limits[]`). Every limit of a route must allow a request.
    public struct RateLimit: Sendable, Equatable {
        /// One part of the key a limit counts by. A request without the part (no token for `client_id`, the header
        /// missing) is counted under its client IP instead.
        public enum KeyPart: Sendable, Equatable, CustomStringConvertible {
            /// The validated token's `client_id`.
            case clientID
            /// The validated token's `sub`.
            case subject
            /// The client's address (from `X-Forwarded-For` only when the peer is a trusted proxy).
            case ip
            /// The route itself: one bucket for everyone.
            case route
            /// A request header's value (`header:NAME`, the name lower-cased).
            case header(String)

            public var description: String {
                switch self {
                case .clientID: "client_id"
                case .subject: "sub"
                case .ip: "ip"
                case .route: "route"
                case .header(let name): "header:\(name)"
                }
            }
        }

        /// Where the counts live.
        public enum Scope: String, Sendable, Equatable {
            /// In this gateway process (the default).
            case local
            /// Shared by every gateway through the top-level `redis` (issue 14).
            case cluster
        }

        /// Unique within the route; named in `RateLimit`/`RateLimit-Policy` and on `/rate-limits`. Default
        /// `limit-<index>`. Letters, digits, `-`, `_` and `.`.
        public var name: String
        /// Required: what the limit counts by (a compound key when several).
        public var key: [KeyPart]
        /// Required with `per`: `rate` requests per `perSeconds` (`100/s`, `600/m`, `10000/h`).
        public var rate: Int
        public var perSeconds: Int
        /// Bucket size: how many requests may come at once. Default one unit's worth of `rate` (at least 1).
        public var burst: Int
        /// Above zero, a request over the limit waits up to this long for its turn instead of being refused (shaping).
        /// Default 0 (refuse at once). At most the route's total timeout.
        public var maxDelayMilliseconds: Int = 0
        public var scope: Scope = .local
        /// With `scope: cluster`: how many gateways share the limit, so that each can enforce its share alone while
        /// Redis is unreachable. Default 1.
        public var clusterInstances: Int = 1

        public init(name: String, key: [KeyPart], rate: Int, perSeconds: Int, burst: Int? = nil, maxDelayMilliseconds: Int = 0) {
            self.name = name
            self.key = key
            self.rate = rate
            self.perSeconds = perSeconds
            self.burst = burst ?? max(1, rate)
            self.maxDelayMilliseconds = maxDelayMilliseconds
        }
    }

    /// A route's circuit breaker (`circuit_breaker`), fed by every upstream try of the route. Defaults are Hystrix's.
    public struct CircuitBreaker: Sendable, Equatable {
        /// What is answered instead of `503 circuit_open` while the breaker is open.
        public struct Fallback: Sendable, Equatable {
            /// Default 200.
            public var status: Int = 200
            /// Default `application/json`.
            public var contentType: String = "application/json"
            /// Default empty.
            public var body: String = ""

            public init(status: Int = 200, contentType: String = "application/json", body: String = "") {
                self.status = status
                self.contentType = contentType
                self.body = body
            }
        }

        /// The rolling window (default 10 s) …
        public var windowMilliseconds: Int = 10_000
        /// … of this many buckets (default 10; the window divides into them evenly).
        public var buckets: Int = 10
        /// No decision below this many tries in the window. Default 20.
        public var minRequests: Int = 20
        /// Open at or above this share of failed tries (0 < rate ≤ 1). Default 50%.
        public var errorRate: Double = 0.5
        /// Tries slower than `slowCallMilliseconds` count as slow; open at or above `slowCallRate` of them. Off by default.
        public var slowCallMilliseconds: Int?
        public var slowCallRate: Double = 1.0
        /// The first open interval (default 5 s), doubling on each consecutive trip up to `maxOpenForMilliseconds`
        /// (default 60 s).
        public var openForMilliseconds: Int = 5_000
        public var maxOpenForMilliseconds: Int = 60_000
        /// Trial requests let through when half-open; all must succeed to close. Default 3.
        public var halfOpenRequests: Int = 3
        /// Response statuses that count as failures (connect failures, resets and timeouts always do). Default
        /// 500, 502, 503, 504.
        public var failureStatuses: [Int] = [500, 502, 503, 504]
        public var fallback: Fallback?

        public init() {}
    }

    /// Bounded concurrency toward a cluster (`admission`): at most `maxInFlight` requests with its targets, the rest
    /// waiting in a priority queue.
    public struct Admission: Sendable, Equatable {
        /// Required: requests being served by the cluster's targets at once.
        public var maxInFlight: Int
        /// Requests waiting for a slot (default 200); beyond it the lowest-priority waiter is shed.
        public var queueSize: Int = 200
        /// Longest wait in the queue (default 1 s), then 503.
        public var queueTimeoutMilliseconds: Int = 1_000

        public init(maxInFlight: Int, queueSize: Int = 200, queueTimeoutMilliseconds: Int = 1_000) {
            self.maxInFlight = maxInFlight
            self.queueSize = queueSize
            self.queueTimeoutMilliseconds = queueTimeoutMilliseconds
        }
    }

    // MARK: Parsing

    static func parsePriority(_ reader: inout YAMLMappingReader, _ key: String) throws -> PriorityClass? {
        guard let text = try reader.string(key) else { return nil }
        guard let value = PriorityClass(rawValue: text) else {
            throw reader.error(key, "expected critical, normal or sheddable, got '\(text)'")
        }
        return value
    }

    static func parsePriorityOverrides(_ reader: inout YAMLMappingReader, authenticated: Bool) throws -> [PriorityOverride] {
        guard let items = try reader.list("priority_overrides") else { return [] }
        if !items.isEmpty && !authenticated {
            throw reader.error("priority_overrides", "needs a token check on the route (auth with a mode other than none): overrides match the token's client_id and scopes")
        }
        var overrides: [PriorityOverride] = []
        for var item in items {
            guard let priority = try parsePriority(&item, "priority") else { throw item.error("priority", "is required", code: .missingKey) }
            let clientIDs = try item.stringList("client_ids") ?? []
            let scopes = try item.stringList("scopes_any_of") ?? []
            for (index, scope) in scopes.enumerated() where !ScopeSyntax.isValidToken(scope) {
                throw item.itemError("scopes_any_of", index, "'\(scope)' is not a valid scope token (RFC 6749 §3.3)")
            }
            try item.finish()
            guard !clientIDs.isEmpty || !scopes.isEmpty else {
                throw item.error("client_ids", "give client_ids or scopes_any_of (an override without a condition would match every request)")
            }
            overrides.append(PriorityOverride(clientIDs: clientIDs, scopesAnyOf: scopes, priority: priority))
        }
        return overrides
    }

    /// `N/s`, `N/m` or `N/h` (also `N/sec`, `N/min`, `N/hour`).
    static func parseRate(_ text: String) -> (rate: Int, perSeconds: Int)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let rate = Int(String(parts[0]).trimmingCharacters(in: " ")), rate > 0 else { return nil }
        switch String(parts[1]).trimmingCharacters(in: " ") {
        case "s", "sec", "second": return (rate, 1)
        case "m", "min", "minute": return (rate, 60)
        case "h", "hour": return (rate, 3600)
        default: return nil
        }
    }

    static func parseKeyPart(_ text: String) -> RateLimit.KeyPart? {
        switch text {
        case "client_id": return .clientID
        case "sub": return .subject
        case "ip": return .ip
        case "route": return .route
        default:
            guard text.hasPrefix("header:") else { return nil }
            let name = String(text.dropFirst("header:".count))
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte) else { return nil }
            return .header(name.lowercased())
        }
    }

    static func parseRateLimits(_ reader: inout YAMLMappingReader, totalTimeoutMilliseconds: Int) throws -> [RateLimit] {
        guard let items = try reader.list("rate_limits") else { return [] }
        var limits: [RateLimit] = []
        for (index, var item) in items.enumerated() {
            let name = try item.string("name") ?? "limit-\(index)"
            guard !name.isEmpty, name.utf8.allSatisfy(isNameByte) else {
                throw item.error("name", "'\(name)' may contain only letters, digits, '-', '_' and '.'")
            }
            guard !limits.contains(where: { $0.name == name }) else { throw item.error("name", "another limit of this route is named '\(name)'") }
            var keyTexts: [String]
            if case .sequence = item.node("key") {
                keyTexts = try item.stringList("key") ?? []
            } else {
                keyTexts = [try item.requiredString("key")]
            }
            guard !keyTexts.isEmpty else { throw item.error("key", "list at least one key part", code: .missingKey) }
            var key: [RateLimit.KeyPart] = []
            for text in keyTexts {
                guard let part = parseKeyPart(text) else {
                    throw item.error("key", "expected client_id, sub, ip, route or header:NAME (or a list of them), got '\(text)'")
                }
                if !key.contains(part) { key.append(part) }
            }
            let rateText = try item.requiredString("rate")
            guard let (rate, per) = parseRate(rateText) else {
                throw item.error("rate", "expected a rate such as 100/s, 600/m or 10000/h, got '\(rateText)'")
            }
            var limit = RateLimit(name: name, key: key, rate: rate, perSeconds: per)
            if let burst = try item.int("burst", range: 1...10_000_000) { limit.burst = burst }
            if let delay = try item.milliseconds("max_delay") {
                guard delay <= totalTimeoutMilliseconds else {
                    throw item.error("max_delay", "must not exceed the route's total timeout (\(totalTimeoutMilliseconds)ms): the request would time out while it waits")
                }
                limit.maxDelayMilliseconds = delay
            }
            if let scope = try item.string("scope") {
                guard let value = RateLimit.Scope(rawValue: scope) else { throw item.error("scope", "expected local or cluster, got '\(scope)'") }
                limit.scope = value
            }
            if let instances = try item.int("cluster_instances", range: 1...10_000) {
                guard limit.scope == .cluster else { throw item.error("cluster_instances", "applies only with scope: cluster") }
                limit.clusterInstances = instances
            }
            try item.finish()
            limits.append(limit)
        }
        return limits
    }

    /// `50%`, or a fraction such as `0.5`.
    static func parseShare(_ reader: inout YAMLMappingReader, _ key: String) throws -> Double? {
        guard let text = try reader.string(key) else { return nil }
        let trimmed = text.trimmingCharacters(in: " ")
        let value: Double?
        if trimmed.hasSuffix("%") {
            value = Double(trimmed.dropLast()).map { $0 / 100 }
        } else {
            value = Double(trimmed)
        }
        guard let value, value > 0, value <= 1 else {
            throw reader.error(key, "expected a share above 0 and at most 100%, such as 50% or 0.5, got '\(text)'")
        }
        return value
    }

    static func parseCircuitBreaker(_ reader: inout YAMLMappingReader) throws -> CircuitBreaker? {
        guard reader.node("circuit_breaker") != nil else { return nil }
        var section = try reader.mapping("circuit_breaker")
        var breaker = CircuitBreaker()
        if let value = try section.milliseconds("window", minimum: 1) { breaker.windowMilliseconds = value }
        if let value = try section.int("buckets", range: 1...1000) { breaker.buckets = value }
        guard breaker.windowMilliseconds % breaker.buckets == 0 else {
            throw section.error("buckets", "the window (\(breaker.windowMilliseconds)ms) must divide evenly into \(breaker.buckets) buckets")
        }
        if let value = try section.int("min_requests", range: 1...1_000_000) { breaker.minRequests = value }
        if let value = try parseShare(&section, "error_rate") { breaker.errorRate = value }
        if section.node("slow_call") != nil {
            var slow = try section.mapping("slow_call")
            guard let duration = try slow.milliseconds("duration", minimum: 1) else { throw slow.error("duration", "is required", code: .missingKey) }
            breaker.slowCallMilliseconds = duration
            if let rate = try parseShare(&slow, "rate") { breaker.slowCallRate = rate }
            try slow.finish()
        }
        if let value = try section.milliseconds("open_for", minimum: 1) { breaker.openForMilliseconds = value }
        if let value = try section.milliseconds("max_open_for", minimum: 1) { breaker.maxOpenForMilliseconds = value }
        guard breaker.maxOpenForMilliseconds >= breaker.openForMilliseconds else {
            throw section.error("max_open_for", "must be at least open_for (\(breaker.openForMilliseconds)ms)")
        }
        if let value = try section.int("half_open_requests", range: 1...10_000) { breaker.halfOpenRequests = value }
        if let statuses = try section.stringList("failure_statuses") {
            var parsed: [Int] = []
            for (index, text) in statuses.enumerated() {
                guard let status = Int(text), (100...599).contains(status) else {
                    throw section.itemError("failure_statuses", index, "expected an HTTP status code (100-599), got '\(text)'")
                }
                if !parsed.contains(status) { parsed.append(status) }
            }
            breaker.failureStatuses = parsed
        }
        if section.node("fallback") != nil {
            var fallbackSection = try section.mapping("fallback")
            var fallback = CircuitBreaker.Fallback()
            if let status = try fallbackSection.int("status", range: 200...599) { fallback.status = status }
            if let type = try fallbackSection.string("content_type") {
                guard !type.isEmpty, type.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
                    throw fallbackSection.error("content_type", "must be a printable ASCII media type")
                }
                fallback.contentType = type
            }
            if let body = try fallbackSection.string("body") { fallback.body = body }
            try fallbackSection.finish()
            breaker.fallback = fallback
        }
        try section.finish()
        return breaker
    }

    static func parseAdmission(_ reader: inout YAMLMappingReader) throws -> Admission? {
        guard reader.node("admission") != nil else { return nil }
        var section = try reader.mapping("admission")
        guard let maxInFlight = try section.int("max_in_flight", range: 1...1_000_000) else {
            throw section.error("max_in_flight", "is required", code: .missingKey)
        }
        var admission = Admission(maxInFlight: maxInFlight)
        if section.node("queue") != nil {
            var queue = try section.mapping("queue")
            if let size = try queue.int("size", range: 0...1_000_000) { admission.queueSize = size }
            if let timeout = try queue.milliseconds("timeout", minimum: 1) { admission.queueTimeoutMilliseconds = timeout }
            try queue.finish()
        }
        try section.finish()
        return admission
    }
}
