/// The idle keep-alive connections of each origin: a value type whose transitions return what to close, tested
/// with explicit times (nanoseconds of a monotonic clock) and no I/O.
///
/// A connection is idle between two requests. It is offered for reuse while younger than `idleTimeout` (a server
/// closes idle connections after its own keep-alive timeout; ours should be shorter so that we rarely hand out a
/// connection the server is closing), and at most `maximumIdlePerOrigin` are kept per origin: a burst that opened
/// more closes the surplus when it ends.
struct IdleConnectionPool<Connection> {
    struct Entry {
        var id: ObjectIdentifier
        var connection: Connection
        var since: UInt64
    }

    let maximumIdlePerOrigin: Int
    let idleTimeout: UInt64
    private(set) var idle: [HTTPOrigin: [Entry]] = [:]

    init(maximumIdlePerOrigin: Int, idleTimeoutNanoseconds: UInt64) {
        self.maximumIdlePerOrigin = maximumIdlePerOrigin
        self.idleTimeout = idleTimeoutNanoseconds
    }

    /// The most recently released connection still young enough, and the expired ones to close.
    mutating func take(_ origin: HTTPOrigin, now: UInt64) -> (connection: Connection?, close: [Connection]) {
        guard var entries = idle[origin] else { return (nil, []) }
        var close: [Connection] = []
        // Expired entries are the oldest: at the front.
        while let first = entries.first, now &- first.since >= idleTimeout {
            close.append(entries.removeFirst().connection)
        }
        let taken = entries.popLast()?.connection
        idle[origin] = entries.isEmpty ? nil : entries
        return (taken, close)
    }

    /// Returns a connection after a complete response; `false`: the pool is full, close it.
    mutating func release(_ connection: Connection, id: ObjectIdentifier, origin: HTTPOrigin, now: UInt64) -> Bool {
        var entries = idle[origin] ?? []
        guard entries.count < maximumIdlePerOrigin else { return false }
        entries.append(Entry(id: id, connection: connection, since: now))
        idle[origin] = entries
        return true
    }

    /// Forgets a connection that closed (or expired) while idle; `true` when it was idle here.
    @discardableResult
    mutating func remove(id: ObjectIdentifier, origin: HTTPOrigin) -> Connection? {
        guard var entries = idle[origin], let index = entries.firstIndex(where: { $0.id == id }) else { return nil }
        let removed = entries.remove(at: index).connection
        idle[origin] = entries.isEmpty ? nil : entries
        return removed
    }

    /// Every idle connection, emptying the pool (shutdown).
    mutating func removeAll() -> [Connection] {
        defer { idle = [:] }
        return idle.values.flatMap { $0.map(\.connection) }
    }

    var count: Int { idle.values.reduce(0) { $0 + $1.count } }
}

extension IdleConnectionPool {
    /// Removes a connection whose idle timer fired, unless it was taken (and maybe released again) since.
    mutating func removeIfIdleSince(_ since: UInt64, id: ObjectIdentifier, origin: HTTPOrigin) -> Connection? {
        guard let entries = idle[origin], entries.contains(where: { $0.id == id && $0.since == since }) else { return nil }
        return remove(id: id, origin: origin)
    }
}

extension IdleConnectionPool: Sendable where Connection: Sendable {}
extension IdleConnectionPool.Entry: Sendable where Connection: Sendable {}
