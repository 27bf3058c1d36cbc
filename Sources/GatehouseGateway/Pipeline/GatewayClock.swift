import NIOCore

/// The one source of time of the data path: deadlines, timeouts, ejection and health windows all read it, once per
/// event where possible (a request's `receivedAt` serves every policy that asks during its admission).
///
/// `system` reads the monotonic clock; `manual` lets tests drive time (an `EmbeddedEventLoop`'s virtual `now`, so
/// that `advanceTime(by:)` moves both the loop's scheduled ticks and every deadline the handler compares).
public struct GatewayClock: Sendable {
    private let read: (@Sendable () -> NIODeadline)?

    private init(read: (@Sendable () -> NIODeadline)?) {
        self.read = read
    }

    /// `NIODeadline.now()`.
    public static let system = GatewayClock(read: nil)

    /// Time as `read` says.
    public static func manual(_ read: @escaping @Sendable () -> NIODeadline) -> GatewayClock {
        GatewayClock(read: read)
    }

    @inline(__always)
    public func now() -> NIODeadline {
        if let read { return read() }
        return .now()
    }
}
