import NIOConcurrencyHelpers
import NIOCore

/// A route, compiled from configuration for the data path.
public struct CompiledRoute: Sendable {
    public var name: String
    public var cluster: CompiledCluster
    /// Replace the matched prefix with this (nil: keep the path; "" with strip: remove the prefix).
    public var prefixReplacement: String?
    public var perTryTimeout: TimeAmount
    public var totalTimeout: TimeAmount
    public var maxBodyBytes: Int
    /// The token policy; nil when the route takes requests without a token.
    public var auth: RouteAuthorization?
}

/// An upstream cluster, compiled.
public final class CompiledCluster: Sendable {
    public enum LoadBalancing: Sendable { case roundRobin, leastRequest }

    public let name: String
    public let targets: [TargetKey]
    public let loadBalancing: LoadBalancing
    let poolLimits: UpstreamPool.LimitsSendable
    public let retryAttempts: Int
    /// Passive and active health, shared by every event loop.
    public let health: TargetHealth
    /// Active checks, when configured.
    public let healthCheck: HealthCheckSettings?

    init(name: String, targets: [TargetKey], loadBalancing: LoadBalancing, poolLimits: UpstreamPool.LimitsSendable, retryAttempts: Int, health: TargetHealth, healthCheck: HealthCheckSettings?) {
        self.healthCheck = healthCheck
        self.name = name
        self.targets = targets
        self.loadBalancing = loadBalancing
        self.poolLimits = poolLimits
        self.retryAttempts = retryAttempts
        self.health = health
    }
}

extension UpstreamPool {
    /// `Limits` as a Sendable value for configuration.
    struct LimitsSendable: Sendable {
        var maxConnections: Int
        var maxIdle: Int
        var idleTimeout: TimeAmount
        var connectTimeout: TimeAmount

        var limits: Limits { Limits(maxConnections: maxConnections, maxIdle: maxIdle, idleTimeout: idleTimeout, connectTimeout: connectTimeout) }
    }
}

/// Health of a cluster's targets: active checks mark them up or down; passive outlier detection ejects a target
/// after consecutive failures for a while. Read on every request, written rarely.
public final class TargetHealth: Sendable {
    struct State {
        var down: Set<TargetKey> = []
        var ejectedUntil: [TargetKey: NIODeadline] = [:]
        var consecutiveFailures: [TargetKey: Int] = [:]
    }

    private let state = NIOLockedValueBox(State())
    let consecutiveFailuresToEject: Int
    let ejectionTime: TimeAmount

    public init(consecutiveFailuresToEject: Int, ejectionTime: TimeAmount) {
        self.consecutiveFailuresToEject = consecutiveFailuresToEject
        self.ejectionTime = ejectionTime
    }

    /// Targets that may take traffic now.
    func isAvailable(_ target: TargetKey, now: NIODeadline) -> Bool {
        state.withLockedValue { state in
            if state.down.contains(target) { return false }
            if let until = state.ejectedUntil[target] {
                if until > now { return false }
                state.ejectedUntil[target] = nil
            }
            return true
        }
    }

    func recordSuccess(_ target: TargetKey) {
        state.withLockedValue { state in
            if state.consecutiveFailures[target] != nil { state.consecutiveFailures[target] = nil }
        }
    }

    /// Counts a failure; ejects the target after enough in a row.
    func recordFailure(_ target: TargetKey, now: NIODeadline) {
        state.withLockedValue { state in
            guard consecutiveFailuresToEject > 0 else { return }  // 0 turns ejection off
            let failures = state.consecutiveFailures[target, default: 0] + 1
            state.consecutiveFailures[target] = failures
            if failures >= consecutiveFailuresToEject {
                state.ejectedUntil[target] = now + ejectionTime
                state.consecutiveFailures[target] = 0
            }
        }
    }

    /// Active health check result.
    public func setDown(_ target: TargetKey, _ down: Bool) {
        state.withLockedValue { state in
            if down { state.down.insert(target) } else { state.down.remove(target) }
        }
    }

    public func isDown(_ target: TargetKey) -> Bool {
        state.withLockedValue { $0.down.contains(target) }
    }
}

/// Everything the data path needs from configuration, immutable; a reload builds a new one and swaps it in.
public struct CompiledGateway: Sendable {
    public var routes: RouteTable<CompiledRoute>
    public var clusters: [CompiledCluster]
    public var maxHeaderBytes: Int
    public var maxHeaderCount: Int
    public var headerReadTimeout: TimeAmount
    public var idleTimeout: TimeAmount
    public var trustedProxies: [CIDRMatcher]
    public var via: String
    /// Checks tokens for the routes that need them (nil without an `authorization_server` section).
    public var tokenValidator: TokenValidator?
    /// A custom header that carries the JWT upstream: removed from every request, so that no client can send its
    /// own to a route without auth. Nil when the JWT goes in `Authorization`.
    public var forwardHeader: String?

    public func isTrusted(_ address: [UInt8]?) -> Bool {
        guard let address, !trustedProxies.isEmpty else { return false }
        return trustedProxies.contains { $0.contains(address) }
    }
}

/// A CIDR block as the data path checks it.
public struct CIDRMatcher: Sendable {
    public var network: [UInt8]
    public var prefixLength: Int

    public init(network: [UInt8], prefixLength: Int) {
        self.network = network
        self.prefixLength = prefixLength
    }

    public func contains(_ address: [UInt8]) -> Bool {
        guard address.count == network.count else { return false }
        var remaining = prefixLength
        for index in 0..<address.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if address[index] & mask != network[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

/// The current compiled configuration, swapped atomically on reload; each exchange keeps the snapshot it
/// started with.
public final class GatewayRuntime: Sendable {
    private let current: NIOLockedValueBox<CompiledGateway>

    public init(_ gateway: CompiledGateway) {
        self.current = NIOLockedValueBox(gateway)
    }

    public var snapshot: CompiledGateway { current.withLockedValue { $0 } }

    public func replace(_ gateway: CompiledGateway) {
        current.withLockedValue { $0 = gateway }
    }
}
