/// The conditions a request must meet for a route to apply. Every non-nil condition must hold; a nil condition
/// matches anything.
public struct RouteMatch: Sendable, Equatable {
    /// `example.com` (exact, case-insensitive) or `*.example.com` (any subdomain, one or more labels deep, never the
    /// apex). Compared against the request's Host without its port and without one trailing dot. Any other form is
    /// compared literally (so a bare `*` matches nothing; the configuration layer should refuse it).
    public var host: String?
    /// Segment-aware path prefix: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; `/api/` matches `/api/`
    /// and below, not `/api`; `/` matches every path. Case-sensitive.
    public var pathPrefix: String?
    /// The path must be equal to this, byte for byte.
    public var exactPath: String?
    /// Allowed request methods. Upper-cased when the table is built; the request method is compared as is (methods
    /// are case-sensitive, RFC 9110 §9.1). nil allows every method.
    public var methods: Set<String>?

    public init(host: String? = nil, pathPrefix: String? = nil, exactPath: String? = nil, methods: Set<String>? = nil) {
        self.host = host
        self.pathPrefix = pathPrefix
        self.exactPath = exactPath
        self.methods = methods
    }
}

/// An ordered route table: the most specific matching route wins.
///
/// Specificity, highest first:
///
/// 1. A route with an exact path beats any prefix route.
/// 2. A longer path prefix (in bytes) beats a shorter one; a route with no path condition ranks below the `/` prefix.
/// 3. A specific host beats a wildcard host (`*.example.com`), which beats no host condition.
/// 4. A method-restricted route beats an unrestricted one.
/// 5. Remaining ties keep configuration order (earlier wins).
///
/// The order is computed once at init. `match` scans it and returns the first hit; the scan is not generic, touches
/// only plain structs and one byte arena (no reference counting), and allocates nothing. The path is expected to
/// be normalized already (see `PathNormalizer`).
public struct RouteTable<Route: Sendable>: Sendable {
    private let matchers: RouteMatchers
    /// In specificity order, like `matchers.entries`.
    private let routes: [Route]
    /// What `match` returns as the prefix: the configured prefix, or nil for exact-path routes and routes without a
    /// path condition.
    private let prefixes: [String?]

    public init(_ entries: [(match: RouteMatch, route: Route)]) {
        let order = RouteMatchers.specificityOrder(entries.map(\.match))
        self.matchers = RouteMatchers(order.map { entries[$0].match })
        self.routes = order.map { entries[$0].route }
        self.prefixes = order.map { entries[$0].match.exactPath == nil ? entries[$0].match.pathPrefix : nil }
    }

    /// The most specific route for this request, and the path prefix it matched (nil for an exact-path route or a
    /// route without a path condition).
    ///
    /// - Parameters:
    ///   - host: the request's Host header (or the authority of an absolute-form target), port allowed; nil if absent.
    ///   - path: the normalized path.
    ///   - method: the request method, e.g. `GET`.
    public func match(host: String?, path: String, method: String) -> (route: Route, prefix: String?)? {
        guard let index = matchers.firstIndex(host: host, path: path, method: method) else { return nil }
        return (routes[index], prefixes[index])
    }
}

// MARK: - Implementation (not generic)

/// The conditions of every route, in specificity order, laid out for a fast scan.
struct RouteMatchers: Sendable {
    struct ByteRange: Sendable {
        var start: Int
        var count: Int
    }

    enum HostKind: UInt8, Sendable {
        case any = 0, wildcard = 1, exact = 2
    }

    /// A plain struct (no references): the bytes live in `arena`.
    struct Entry: Sendable {
        var exactPath: ByteRange?
        var pathPrefix: ByteRange?
        var hostKind: HostKind
        /// `.exact`: the host, lower-cased, no port, no trailing dot. `.wildcard`: the suffix with its leading dot
        /// (`.example.com`), lower-cased.
        var host: ByteRange
        var restrictsMethods: Bool
    }

    private(set) var entries: [Entry] = []
    private var arena: [UInt8] = []
    /// Upper-cased; nil when the route allows every method. Parallel to `entries`.
    private var methods: [Set<String>?] = []

    /// The indices of `matches` in specificity order.
    static func specificityOrder(_ matches: [RouteMatch]) -> [Int] {
        struct Key {
            var exact: Bool
            var prefixLength: Int
            var hostRank: UInt8
            var methodRestricted: Bool
            var index: Int
        }
        var keys = matches.enumerated().map { index, match in
            Key(
                exact: match.exactPath != nil,
                prefixLength: match.pathPrefix?.utf8.count ?? -1,
                hostRank: hostPattern(match.host).kind.rawValue,
                methodRestricted: match.methods != nil,
                index: index
            )
        }
        keys.sort { l, r in
            if l.exact != r.exact { return l.exact }
            if l.prefixLength != r.prefixLength { return l.prefixLength > r.prefixLength }
            if l.hostRank != r.hostRank { return l.hostRank > r.hostRank }
            if l.methodRestricted != r.methodRestricted { return l.methodRestricted }
            return l.index < r.index
        }
        return keys.map(\.index)
    }

    init(_ matches: [RouteMatch]) {
        for match in matches {
            let host = Self.hostPattern(match.host)
            entries.append(Entry(
                exactPath: match.exactPath.map { store(Array($0.utf8)) },
                pathPrefix: match.pathPrefix.map { store(Array($0.utf8)) },
                hostKind: host.kind,
                host: store(host.bytes),
                restrictsMethods: match.methods != nil
            ))
            methods.append(match.methods.map { Set($0.map(Self.asciiUppercased)) })
        }
    }

    private mutating func store(_ bytes: [UInt8]) -> ByteRange {
        let range = ByteRange(start: arena.count, count: bytes.count)
        arena.append(contentsOf: bytes)
        return range
    }

    func firstIndex(host: String?, path: String, method: String) -> Int? {
        Self.withBytes(path) { path in
            guard let host else { return firstIndex(hostName: nil, path: path, method: method) }
            return Self.withBytes(host) { firstIndex(hostName: Self.hostName($0), path: path, method: method) }
        }
    }

    private func firstIndex(hostName host: UnsafeBufferPointer<UInt8>?, path: UnsafeBufferPointer<UInt8>, method: String) -> Int? {
        arena.withUnsafeBufferPointer { arena in
            entries.withUnsafeBufferPointer { entries in
                for index in entries.indices {
                    let entry = entries[index]
                    if let exact = entry.exactPath, !Self.equal(path, arena, exact) { continue }
                    if let prefix = entry.pathPrefix, !Self.hasSegmentPrefix(path, arena, prefix) { continue }
                    switch entry.hostKind {
                    case .any: break
                    case .exact: guard let host, Self.equalLowercased(host, arena, entry.host) else { continue }
                    case .wildcard: guard let host, Self.hasLowercasedSuffix(host, arena, entry.host) else { continue }
                    }
                    if entry.restrictsMethods, let allowed = methods[index], !allowed.contains(method) { continue }
                    return index
                }
                return nil
            }
        }
    }

    // MARK: Byte helpers

    private static func withBytes(_ string: String, _ body: (UnsafeBufferPointer<UInt8>) -> Int?) -> Int? {
        if let result = string.utf8.withContiguousStorageIfAvailable(body) { return result }
        // Only a bridged, non-contiguous string gets here.
        return Array(string.utf8).withUnsafeBufferPointer(body)
    }

    private static func equal(_ path: UnsafeBufferPointer<UInt8>, _ arena: UnsafeBufferPointer<UInt8>, _ range: ByteRange) -> Bool {
        guard path.count == range.count else { return false }
        for i in 0..<range.count where path[i] != arena[range.start + i] { return false }
        return true
    }

    /// Segment-aware: the prefix matches byte for byte and ends on a segment boundary (the prefix ends with `/`,
    /// or the path ends there, or the path continues with `/`).
    private static func hasSegmentPrefix(_ path: UnsafeBufferPointer<UInt8>, _ arena: UnsafeBufferPointer<UInt8>, _ range: ByteRange) -> Bool {
        let count = range.count
        guard path.count >= count else { return false }
        for i in 0..<count where path[i] != arena[range.start + i] { return false }
        return count == 0 || arena[range.start + count - 1] == 0x2F || path.count == count || path[count] == 0x2F
    }

    private static func equalLowercased(_ host: UnsafeBufferPointer<UInt8>, _ arena: UnsafeBufferPointer<UInt8>, _ range: ByteRange) -> Bool {
        guard host.count == range.count else { return false }
        for i in 0..<range.count where asciiLowercased(host[i]) != arena[range.start + i] { return false }
        return true
    }

    /// True if `host` ends with the suffix (`.example.com`) and has at least one more byte before it.
    private static func hasLowercasedSuffix(_ host: UnsafeBufferPointer<UInt8>, _ arena: UnsafeBufferPointer<UInt8>, _ range: ByteRange) -> Bool {
        guard host.count > range.count else { return false }
        let offset = host.count - range.count
        for i in 0..<range.count where asciiLowercased(host[offset + i]) != arena[range.start + i] { return false }
        return true
    }

    /// The host part of a Host header value: without the port, without one trailing dot. `[v6]:port` keeps its
    /// brackets.
    static func hostName(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var end = bytes.count
        if bytes.first == 0x5B {  // [
            if let close = bytes.firstIndex(of: 0x5D) { end = close + 1 }  // ]
        } else if let colon = bytes.firstIndex(of: 0x3A) {
            end = colon
        }
        if end > 0 && bytes[end - 1] == 0x2E { end -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[0..<end])
    }

    /// A configured host: `*.example.com` is a wildcard (bytes: `.example.com`), anything else exact; lower-cased,
    /// port and one trailing dot removed, like a request's host.
    static func hostPattern(_ host: String?) -> (kind: HostKind, bytes: [UInt8]) {
        guard let host else { return (.any, []) }
        let name = Array(host.utf8).withUnsafeBufferPointer { Array(hostName($0)) }.map(asciiLowercased)
        if name.count > 2 && name[0] == 0x2A && name[1] == 0x2E {  // "*."
            return (.wildcard, Array(name.dropFirst()))
        }
        return (.exact, name)
    }

    @inline(__always)
    static func asciiLowercased(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }

    static func asciiUppercased(_ string: String) -> String {
        String(decoding: string.utf8.map { $0 >= 0x61 && $0 <= 0x7A ? $0 & ~0x20 : $0 }, as: UTF8.self)
    }
}
