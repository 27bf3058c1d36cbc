@testable import GatehouseGateway
import Testing

@Suite struct PathNormalizerTests {
    private static func normalized(_ target: String) -> NormalizedTarget? {
        guard case .success(let value) = PathNormalizer.normalize(target) else { return nil }
        return value
    }

    private static func errorCode(_ target: String) -> PathError.Code? {
        guard case .failure(let error) = PathNormalizer.normalize(target) else { return nil }
        return error.code
    }

    // MARK: Accepted targets

    @Test(arguments: [
        // The examples the README quotes.
        ("/public/../admin", "/admin", nil),
        ("/public/%2e%2e/admin", "/admin", nil),
        ("/a/./b//c/", "/a/b/c/", nil),
        ("/%7Euser", "/~user", nil),
        ("/a%20b", "/a%20b", nil),
        ("/a%c3%a9", "/a%C3%A9", nil),
        ("/x?y=1/../z", "/x", "y=1/../z"),
        ("http://example.com:8080/a/../b?q", "/b", "q"),
        ("http://example.com", "/", nil),
        // Already normal (fast path).
        ("/", "/", nil),
        ("/api/v1/users", "/api/v1/users", nil),
        ("/api/v1/users?limit=10&after=abc", "/api/v1/users", "limit=10&after=abc"),
        ("/a..b/c...", "/a..b/c...", nil),
        ("/a.b/", "/a.b/", nil),
        // Duplicate slashes.
        ("//a///b", "/a/b", nil),
        ("//", "/", nil),
        ("/a//", "/a/", nil),
        ("///", "/", nil),
        // Dot-segments.
        ("/../a", "/a", nil),
        ("/..", "/", nil),
        ("/.", "/", nil),
        ("/./", "/", nil),
        ("/a/..", "/", nil),
        ("/a/../", "/", nil),
        ("/a/b/..", "/a/", nil),
        ("/a/b/.", "/a/b/", nil),
        ("/a/b/../c", "/a/c", nil),
        ("/a/b/../../../../c", "/c", nil),
        ("/a//../b", "/b", nil),
        ("/a/./../b/./c/.", "/b/c/", nil),
        ("/.hidden/.../x", "/.hidden/.../x", nil),
        ("/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", nil),
        ("/public/%2E%2E/admin", "/admin", nil),
        ("/a/%2E%2E", "/", nil),
        ("/%2e/a", "/a", nil),
        ("/a/.%2e/b", "/b", nil),
        ("/a%2e/b", "/a./b", nil),
        // Percent-decoding of unreserved characters, upper-casing of the rest.
        ("/%41%62%2D%5f%7e%30%2E", "/Ab-_~0.", nil),
        ("/a%2a", "/a%2A", nil),
        ("/a%3F", "/a%3F", nil),
        ("/a%23", "/a%23", nil),
        ("/a%25", "/a%25", nil),
        ("/%25%32%30", "/%2520", nil),  // an escaped "%" stays escaped; "/%25%32%46" (a double-encoded "/") is refused below
        ("/a%0a", "/a%0A", nil),
        ("/a%7f%ff", "/a%7F%FF", nil),
        // The query is kept byte-for-byte.
        ("/q?a=%2F&b=%zz&c=%5c", "/q", "a=%2F&b=%zz&c=%5c"),
        ("/q?", "/q", ""),
        ("/q?a?b", "/q", "a?b"),
        ("/q?a\\b//c/./d", "/q", "a\\b//c/./d"),
        ("/a/../b?x=%2e%2e", "/b", "x=%2e%2e"),
        ("/?", "/", ""),
        // Absolute-form.
        ("https://example.com/a", "/a", nil),
        ("HTTP://Example.COM/a", "/a", nil),
        ("HtTpS://example.com:443//a/./b", "/a/b", nil),
        ("http://example.com?q=1", "/", "q=1"),
        ("http://example.com/", "/", nil),
        ("http://[::1]:8080/a%7e", "/a~", nil),
        ("http://example.com/x?next=http://other/", "/x", "next=http://other/"),
    ] as [(String, String, String?)])
    func accepts(target: String, path: String, query: String?) {
        let normalized = Self.normalized(target)
        #expect(normalized?.path == path)
        #expect(normalized?.query == query)
    }

    /// Normalizing a normalized path changes nothing.
    @Test(arguments: [
        "/public/../admin", "/a/./b//c/", "/%7Euser", "/a%c3%a9", "/a/b/..", "//a///b", "/a%2e/b", "/%25%32%30",
        "http://example.com:8080/a/../b?q", "/.hidden/.../x",
    ])
    func isIdempotent(target: String) throws {
        let once = try #require(Self.normalized(target))
        #expect(Self.normalized(once.path) == NormalizedTarget(path: once.path, query: nil))
    }

    // MARK: Refused targets

    @Test(arguments: [
        // Form.
        ("", .notOriginForm),
        ("*", .notOriginForm),
        ("a/b", .notOriginForm),
        ("example.com:443", .notOriginForm),
        ("ftp://example.com/a", .notOriginForm),
        ("http:/example.com/a", .notOriginForm),
        ("http://", .notOriginForm),
        ("http:///a", .notOriginForm),
        ("http://?q", .notOriginForm),
        ("http://user@evil.example/a", .notOriginForm),
        ("http://evil.example\\@good.example/a", .notOriginForm),
        ("?a=b", .notOriginForm),
        ("%2Fa", .notOriginForm),
        // Encoded slash and backslash.
        ("/public/..%2Fadmin", .encodedSlash),
        ("/public/..%2fadmin", .encodedSlash),
        ("/a%2Fb", .encodedSlash),
        ("http://example.com/a%2fb", .encodedSlash),
        ("/a%5Cb", .encodedBackslash),
        ("/a%5cb", .encodedBackslash),
        ("/a\\b", .encodedBackslash),
        ("/..\\admin", .encodedBackslash),
        ("\\a", .notOriginForm),
        // NUL and other control characters, non-ASCII.
        ("/a%00b", .nul),
        ("/a\u{0}b", .nul),
        ("/q?a=\u{0}", .nul),
        ("/a\nb", .controlCharacter),
        ("/a\r\nHost: evil", .controlCharacter),
        ("/a\tb", .controlCharacter),
        ("/a\u{1F}", .controlCharacter),
        ("/a\u{7F}", .controlCharacter),
        ("/caf\u{E9}", .controlCharacter),
        ("/q?name=caf\u{E9}", .controlCharacter),
        ("/q?x=\r\n", .controlCharacter),
        ("\u{1}/a", .controlCharacter),
        // Malformed percent-encoding (the path only).
        ("/a%", .invalidPercentEncoding),
        ("/a%4", .invalidPercentEncoding),
        ("/a%zz", .invalidPercentEncoding),
        ("/a%g0", .invalidPercentEncoding),
        ("/a%0g", .invalidPercentEncoding),
        ("/a%4?x=1", .invalidPercentEncoding),
        ("/a%?x", .invalidPercentEncoding),
        ("/%%41", .invalidPercentEncoding),
        // Fragments.
        ("/a#b", .fragment),
        ("/a?b#c", .fragment),
        ("/#", .fragment),
        ("http://example.com#x", .fragment),
        // Double encodings of ".", "/", "\\" and "%", also when assembled from escaped unreserved characters.
        ("/public/%252e%252e/api", .doubleEncoding),
        ("/public/%252fapi", .doubleEncoding),
        ("/public/%252F", .doubleEncoding),
        ("/a%255c", .doubleEncoding),
        ("/a%2525", .doubleEncoding),
        ("/%25%32%46", .doubleEncoding),
        ("/%25%32%65", .doubleEncoding),
        // Overlong UTF-8 (`%C0%AE` is an overlong ".", `%E0%80%AE` a three-byte one, `%F0%80%80%AF` a four-byte "/").
        ("/public/%C0%AE%C0%AE/api", .overlongUTF8),
        ("/a%c0%af", .overlongUTF8),
        ("/a%C1%9C", .overlongUTF8),
        ("/a%E0%80%AE", .overlongUTF8),
        ("/a%F0%80%80%AF", .overlongUTF8),
    ] as [(String, PathError.Code)])
    func refuses(target: String, code: PathError.Code) {
        #expect(Self.errorCode(target) == code)
    }

    // MARK: Path parameters (`;`)

    @Test(arguments: [
        ("/public/..;/api/orders", "/api/orders"),
        ("/public/..;jsessionid=1/api", "/api"),
        ("/public/.;x/api", "/public/api"),
        ("/public/%2e%2e;/api", "/api"),
        ("/a/b;v=1/c", "/a/b;v=1/c"),  // parameters of a regular segment pass as they are
        ("/a/;x/c", "/a/;x/c"),
        ("/a/..;", "/"),
        ("/a/b/..;x", "/a/"),
        ("/..;/..;/etc", "/etc"),
    ])
    func dotSegmentsWithParametersAreDotSegments(target: String, path: String) {
        #expect(Self.normalized(target)?.path == path)
    }

    @Test func parametersCanBeRefused() {
        for target in ["/a;b", "/public/..;/api", "/x/y;"] {
            guard case .failure(let error) = PathNormalizer.normalize(target, parameters: .reject) else {
                Issue.record("\(target) was accepted")
                continue
            }
            #expect(error.code == .pathParameter)
        }
        #expect((try? PathNormalizer.normalize("/a/b?x=;", parameters: .reject).get())?.path == "/a/b")  // queries are not paths
    }

    @Test func validUTF8AndLatin1EscapesPass() {
        #expect(Self.normalized("/caf%C3%A9")?.path == "/caf%C3%A9")
        #expect(Self.normalized("/%E0%A4%95")?.path == "/%E0%A4%95")  // a real three-byte sequence after E0
        #expect(Self.normalized("/%F0%9F%98%80")?.path == "/%F0%9F%98%80")
        #expect(Self.normalized("/caf%E9")?.path == "/caf%E9")
    }

    @Test func absoluteFormKeepsItsAuthority() {
        #expect(Self.normalized("http://api.example:8080/a/../b?q")?.authority == "api.example:8080")
        #expect(Self.normalized("http://api.example")?.authority == "api.example")
        #expect(Self.normalized("/a")?.authority == nil)
    }

    @Test func errorsCarryAFixedMessage() throws {
        let result = PathNormalizer.normalize("/a%2Fsecret-looking-input")
        guard case .failure(let error) = result else {
            Issue.record("expected a failure, got \(result)")
            return
        }
        #expect(error.code == .encodedSlash)
        #expect(!error.message.isEmpty)
        #expect(!error.message.contains("secret-looking-input"))
    }

    @Test func firstOffendingByteDecidesAmongByteErrors() {
        #expect(Self.errorCode("/a#b\u{0}") == .fragment)
        #expect(Self.errorCode("/a\u{0}b#") == .nul)
        // Byte checks cover the whole target, so they win over a path error before them.
        #expect(Self.errorCode("/a%2Fb?\u{0}") == .nul)
        // Among path errors, the first one in the path decides.
        #expect(Self.errorCode("/a%5Cb%2Fc") == .encodedBackslash)
        #expect(Self.errorCode("/a%2Fb%zz") == .encodedSlash)
    }

    // MARK: Length

    @Test func longestAcceptedTarget() {
        let target = "/" + String(repeating: "a", count: PathNormalizer.maximumLength - 1)
        #expect(target.utf8.count == 8192)
        #expect(Self.normalized(target) == NormalizedTarget(path: target, query: nil))
    }

    @Test(arguments: [
        "/" + String(repeating: "a", count: 8192),
        "/?" + String(repeating: "q", count: 8191),
        "/" + String(repeating: "%2e%2e/", count: 2000),
        String(repeating: "/", count: 9000),
    ])
    func tooLong(target: String) {
        #expect(target.utf8.count > 8192)
        #expect(Self.errorCode(target) == .tooLong)
    }

    @Test func longPathsThatNeedWork() {
        // 1300 segments, then climbed out of again (and once more above the root).
        let climb = "/" + String(repeating: "a/", count: 1300) + String(repeating: "../", count: 1301) + "x"
        #expect(climb.utf8.count <= 8192)
        #expect(Self.normalized(climb)?.path == "/x")
        // A long path of encoded unreserved characters decodes to a third of its length.
        let encoded = "/" + String(repeating: "%61", count: 2700)
        #expect(Self.normalized(encoded)?.path == "/" + String(repeating: "a", count: 2700))
        // Encodings that stay encoded keep the length.
        let kept = "/" + String(repeating: "%c3%a9", count: 1300)
        #expect(Self.normalized(kept)?.path == "/" + String(repeating: "%C3%A9", count: 1300))
        // Many slashes collapse.
        let slashes = String(repeating: "/", count: 8000) + "a"
        #expect(Self.normalized(slashes)?.path == "/a")
    }

    @Test func originFormWithoutQueryIsReturnedAsIs() {
        let target = "/already/normal/path.json"
        #expect(Self.normalized(target) == NormalizedTarget(path: target, query: nil))
    }
}

@Suite struct RouteTableTests {
    private static func table(_ entries: [(RouteMatch, String)]) -> RouteTable<String> {
        RouteTable(entries.map { (match: $0.0, route: $0.1) })
    }

    // MARK: Path prefixes

    @Test(arguments: [
        ("/api", "/api", true),
        ("/api", "/api/", true),
        ("/api", "/api/x", true),
        ("/api", "/api/x/y", true),
        ("/api", "/apix", false),
        ("/api", "/ap", false),
        ("/api", "/", false),
        ("/api", "/API", false),
        ("/api", "/v1/api", false),
        ("/api/", "/api/", true),
        ("/api/", "/api/x", true),
        ("/api/", "/api", false),
        ("/api/", "/apix", false),
        ("/", "/", true),
        ("/", "/anything/at/all", true),
        ("/api/v1", "/api/v1", true),
        ("/api/v1", "/api/v10", false),
        ("/api/v1", "/api/v1/users", true),
    ])
    func segmentAwarePrefix(prefix: String, path: String, matches: Bool) {
        let table = Self.table([(RouteMatch(pathPrefix: prefix), "r")])
        let result = table.match(host: nil, path: path, method: "GET")
        #expect((result != nil) == matches)
        if matches { #expect(result?.prefix == prefix) }
    }

    @Test func exactPathMatchesOnlyItself() {
        let table = Self.table([(RouteMatch(exactPath: "/healthz"), "health")])
        let hit = table.match(host: nil, path: "/healthz", method: "GET")
        #expect(hit?.route == "health")
        #expect(hit?.prefix == nil)
        #expect(table.match(host: nil, path: "/healthz/", method: "GET") == nil)
        #expect(table.match(host: nil, path: "/healthzz", method: "GET") == nil)
        #expect(table.match(host: nil, path: "/health", method: "GET") == nil)
        #expect(table.match(host: nil, path: "/HEALTHZ", method: "GET") == nil)
    }

    @Test func routeWithoutPathConditionMatchesEveryPath() {
        let table = Self.table([(RouteMatch(host: "example.com"), "site")])
        let hit = table.match(host: "example.com", path: "/any/thing", method: "GET")
        #expect(hit?.route == "site")
        #expect(hit?.prefix == nil)
    }

    @Test func emptyTableMatchesNothing() {
        #expect(RouteTable<String>([]).match(host: "example.com", path: "/", method: "GET") == nil)
    }

    // MARK: Hosts

    @Test(arguments: [
        ("example.com", "example.com", true),
        ("example.com", "Example.COM", true),
        ("example.com", "Example.com:8080", true),
        ("example.com", "example.com.", true),
        ("example.com", "example.com.:443", true),
        ("Example.Com", "example.com", true),
        ("example.com", "www.example.com", false),
        ("example.com", "example.co", false),
        ("example.com", "example.com.evil", false),
        ("example.com", "", false),
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "A.Example.Com:443", true),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", ".example.com", false),
        ("*.example.com", "badexample.com", false),
        ("*.example.com", "example.com.evil", false),
        ("*.example.com", "a.example.com.evil", false),
        ("[::1]", "[::1]:8080", true),
        ("[::1]", "[::1]", true),
        ("[::1]", "[::2]", false),
        ("127.0.0.1", "127.0.0.1:9000", true),
    ])
    func hostMatching(pattern: String, host: String, matches: Bool) {
        let table = Self.table([(RouteMatch(host: pattern, pathPrefix: "/"), "r")])
        #expect((table.match(host: host, path: "/", method: "GET") != nil) == matches)
    }

    @Test func hostConditionNeedsAHost() {
        let table = Self.table([(RouteMatch(host: "example.com"), "a"), (RouteMatch(host: "*.example.com"), "b")])
        #expect(table.match(host: nil, path: "/", method: "GET") == nil)
    }

    @Test func specificHostBeatsWildcardBeatsNone() {
        let entries: [(RouteMatch, String)] = [
            (RouteMatch(pathPrefix: "/"), "any"),
            (RouteMatch(host: "*.example.com", pathPrefix: "/"), "wildcard"),
            (RouteMatch(host: "api.example.com", pathPrefix: "/"), "exact"),
        ]
        for table in [Self.table(entries), Self.table(entries.reversed())] {
            #expect(table.match(host: "api.example.com", path: "/x", method: "GET")?.route == "exact")
            #expect(table.match(host: "API.example.com:443", path: "/x", method: "GET")?.route == "exact")
            #expect(table.match(host: "www.example.com", path: "/x", method: "GET")?.route == "wildcard")
            #expect(table.match(host: "example.com", path: "/x", method: "GET")?.route == "any")
            #expect(table.match(host: nil, path: "/x", method: "GET")?.route == "any")
        }
    }

    // MARK: Methods

    @Test func methodRestrictions() {
        let table = Self.table([
            (RouteMatch(pathPrefix: "/items"), "any"),
            (RouteMatch(pathPrefix: "/items", methods: ["GET", "HEAD"]), "read"),
            (RouteMatch(pathPrefix: "/admin", methods: ["post"]), "admin-post"),
        ])
        #expect(table.match(host: nil, path: "/items/1", method: "GET")?.route == "read")
        #expect(table.match(host: nil, path: "/items/1", method: "HEAD")?.route == "read")
        #expect(table.match(host: nil, path: "/items/1", method: "POST")?.route == "any")
        #expect(table.match(host: nil, path: "/items/1", method: "DELETE")?.route == "any")
        // Configured methods are upper-cased; request methods are case-sensitive (RFC 9110 §9.1).
        #expect(table.match(host: nil, path: "/admin", method: "POST")?.route == "admin-post")
        #expect(table.match(host: nil, path: "/admin", method: "post") == nil)
        #expect(table.match(host: nil, path: "/admin", method: "GET") == nil)
        #expect(table.match(host: nil, path: "/items", method: "get")?.route == "any")
    }

    // MARK: Specificity

    @Test func exactPathBeatsAnyPrefix() {
        let entries: [(RouteMatch, String)] = [
            (RouteMatch(host: "example.com", pathPrefix: "/login", methods: ["GET"]), "prefix"),
            (RouteMatch(exactPath: "/login"), "exact"),
        ]
        for table in [Self.table(entries), Self.table(entries.reversed())] {
            let hit = table.match(host: "example.com", path: "/login", method: "GET")
            #expect(hit?.route == "exact")
            #expect(hit?.prefix == nil)
            #expect(table.match(host: "example.com", path: "/login/x", method: "GET")?.route == "prefix")
        }
    }

    @Test func longerPrefixBeatsShorter() {
        let entries: [(RouteMatch, String)] = [
            (RouteMatch(pathPrefix: "/"), "root"),
            (RouteMatch(pathPrefix: "/api"), "api"),
            (RouteMatch(pathPrefix: "/api/v2"), "v2"),
            (RouteMatch(pathPrefix: "/api/v2/"), "v2-slash"),
        ]
        for table in [Self.table(entries), Self.table(entries.reversed())] {
            #expect(table.match(host: nil, path: "/api/v2/x", method: "GET")?.route == "v2-slash")
            #expect(table.match(host: nil, path: "/api/v2/x", method: "GET")?.prefix == "/api/v2/")
            #expect(table.match(host: nil, path: "/api/v2", method: "GET")?.route == "v2")
            #expect(table.match(host: nil, path: "/api/v2", method: "GET")?.prefix == "/api/v2")
            #expect(table.match(host: nil, path: "/api/v20", method: "GET")?.route == "api")
            #expect(table.match(host: nil, path: "/api", method: "GET")?.route == "api")
            #expect(table.match(host: nil, path: "/apix", method: "GET")?.route == "root")
            #expect(table.match(host: nil, path: "/apix", method: "GET")?.prefix == "/")
        }
    }

    @Test func longerPrefixBeatsHostAndMethod() {
        let entries: [(RouteMatch, String)] = [
            (RouteMatch(host: "api.example.com", pathPrefix: "/", methods: ["GET"]), "host"),
            (RouteMatch(pathPrefix: "/api"), "prefix"),
        ]
        for table in [Self.table(entries), Self.table(entries.reversed())] {
            #expect(table.match(host: "api.example.com", path: "/api/x", method: "GET")?.route == "prefix")
            #expect(table.match(host: "api.example.com", path: "/other", method: "GET")?.route == "host")
        }
    }

    @Test func hostBeatsMethod() {
        let entries: [(RouteMatch, String)] = [
            (RouteMatch(pathPrefix: "/a", methods: ["GET"]), "method"),
            (RouteMatch(host: "*.example.com", pathPrefix: "/a"), "host"),
        ]
        for table in [Self.table(entries), Self.table(entries.reversed())] {
            #expect(table.match(host: "x.example.com", path: "/a", method: "GET")?.route == "host")
            #expect(table.match(host: "other.com", path: "/a", method: "GET")?.route == "method")
        }
    }

    @Test func prefixRouteBeatsRouteWithoutPathCondition() {
        let entries: [(RouteMatch, String)] = [
            (RouteMatch(host: "example.com", methods: ["GET"]), "no-path"),
            (RouteMatch(pathPrefix: "/"), "root"),
        ]
        for table in [Self.table(entries), Self.table(entries.reversed())] {
            #expect(table.match(host: "example.com", path: "/x", method: "GET")?.route == "root")
        }
    }

    @Test func tiesKeepConfigurationOrder() {
        let table = Self.table([
            (RouteMatch(pathPrefix: "/a"), "first"),
            (RouteMatch(pathPrefix: "/a"), "second"),
            (RouteMatch(host: "*.x.com", pathPrefix: "/b"), "wild-first"),
            (RouteMatch(host: "*.y.x.com", pathPrefix: "/b"), "wild-second"),
            (RouteMatch(exactPath: "/c", methods: ["GET"]), "exact-first"),
            (RouteMatch(exactPath: "/c", methods: ["GET", "POST"]), "exact-second"),
        ])
        #expect(table.match(host: nil, path: "/a/z", method: "GET")?.route == "first")
        #expect(table.match(host: "z.y.x.com", path: "/b", method: "GET")?.route == "wild-first")
        #expect(table.match(host: nil, path: "/c", method: "GET")?.route == "exact-first")
        #expect(table.match(host: nil, path: "/c", method: "POST")?.route == "exact-second")
    }

    @Test func allConditionsMustHold() {
        let table = Self.table([
            (RouteMatch(host: "example.com", exactPath: "/token", methods: ["POST"]), "token"),
        ])
        #expect(table.match(host: "example.com", path: "/token", method: "POST")?.route == "token")
        #expect(table.match(host: "example.com", path: "/token", method: "GET") == nil)
        #expect(table.match(host: "other.com", path: "/token", method: "POST") == nil)
        #expect(table.match(host: "example.com", path: "/token/x", method: "POST") == nil)
    }

    /// The normalizer and the table together: traversal cannot reach a more privileged route.
    @Test(arguments: [
        ("/public/../admin", "admin"),
        ("/public/%2e%2e/admin", "admin"),
        ("/public//admin", "public"),
        ("//admin", "admin"),
        ("/public/./x", "public"),
    ])
    func normalizedPathsRouteWhereTheBackendResolves(target: String, expected: String) throws {
        let table = Self.table([
            (RouteMatch(pathPrefix: "/public"), "public"),
            (RouteMatch(pathPrefix: "/admin"), "admin"),
        ])
        guard case .success(let normalized) = PathNormalizer.normalize(target) else {
            Issue.record("\(target) was refused")
            return
        }
        #expect(table.match(host: nil, path: normalized.path, method: "GET")?.route == expected)
    }
}
