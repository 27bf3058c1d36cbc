#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock seconds since 1970, injectable so that expiry and throttling can be tested without waiting.
public protocol AuthClock: Sendable {
    func now() -> Int
}

/// The system's real-time clock.
public struct SystemAuthClock: AuthClock {
    public init() {}
    public func now() -> Int { Int(time(nil)) }
}
