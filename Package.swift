// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "gatehouse",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "gatehouse", targets: ["gatehouse"]),
        .library(name: "GatehouseAuthServer", targets: ["GatehouseAuthServer"]),
        .library(name: "GatehouseStore", targets: ["GatehouseStore"]),
        .library(name: "GatehouseConfiguration", targets: ["GatehouseConfiguration"]),
        .library(name: "GatehouseServiceAuth", targets: ["GatehouseServiceAuth"]),
        // The token types `GatehouseServiceAuth`'s API returns and takes (`AccessTokenClaims`, `ScopeRequirement`,
        // `BearerToken`): a product, so that its users can import what they are handed.
        .library(name: "GatehouseTokens", targets: ["GatehouseTokens"]),
        .library(name: "GatehouseRedis", targets: ["GatehouseRedis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", "5.0.1"..<"7.0.0"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        // Already in the graph through Hummingbird; named for NIOHTTPTypesHTTP1 (the codec of Hummingbird's HTTP/1
        // channel, in front of which the introspection fast path is placed).
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        // Already in the graph through Hummingbird; named for `HTTPTypes`, which the authorization server's routes use.
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // The PostgreSQL store: the wire protocol, SCRAM authentication and pooling are not ours to write.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // Already in the graph through Hummingbird; the tracing API our tracer implements (spans at the
        // authorization server, the demo backend and the gateway's calls to it).
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
    ],
    targets: [
        // Argument parsing and wiring only.
        .executableTarget(
            name: "gatehouse",
            dependencies: [
                "GatehouseAuthServer", "GatehouseStore", "GatehouseConfiguration", "GatehouseObservability", "GatehouseTokens", "GatehouseGateway", "GatehouseDemoBackend",
                "GatehouseServiceAuth", "GatehouseStorePostgres", "GatehouseRedis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The YAML model of both servers, validated completely at load. No networking. Scope tokens are checked with
        // the token library's RFC 6749 grammar (`ScopeSyntax`): configuration depends on tokens, never the reverse.
        .target(
            name: "GatehouseConfiguration",
            dependencies: ["GatehouseTokens", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        // Token primitives shared by both servers and by backends: opaque split tokens, hashing, PKCE, JOSE
        // (signing keys, RFC 7638 thumbprints, RFC 9068 claims, a JWKS verifier with an algorithm allow-list), and
        // the RFC 6750 bearer primitives (`BearerToken`, `BearerChallenge`, `ScopeRequirement`) and the RFC 6749 scope
        // grammar (`ScopeSyntax`).
        .target(
            name: "GatehouseTokens",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        // The storage protocol and its SQLite implementation (schema, migrations, group commit).
        .target(
            name: "GatehouseStore",
            dependencies: [
                "GatehouseTokens",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The PostgreSQL implementation of the storage protocol, for replicated authorization servers (its own
        // target, so that the SQLite-only build of GatehouseStore does not carry postgres-nio).
        .target(
            name: "GatehouseStorePostgres",
            dependencies: [
                "GatehouseStore", "GatehouseTokens",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The OAuth 2.0 authorization server: endpoints, grant logic, sessions, pages.
        .target(
            name: "GatehouseAuthServer",
            dependencies: [
                "GatehouseStore", "GatehouseTokens", "GatehouseConfiguration", "GatehouseObservability",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
        // The gateway's data path: SwiftNIO channel handlers (listeners, routing, upstream pools, forwarding).
        .target(
            name: "GatehouseGateway",
            dependencies: [
                "GatehouseConfiguration", "GatehouseObservability", "GatehousePolicies", "GatehouseTokens", "GatehouseHTTPClient", "GatehouseRedis",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            // The data path's classes are confined to their event loop, so dynamic exclusivity checks only cost
            // (about 3% of a proxied request's CPU in release builds); debug builds and tests keep them.
            swiftSettings: swiftSettings + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // Per-route policy state machines with an injected clock (the token cache; rate limits and breakers
        // follow). No I/O, no NIO.
        .target(
            name: "GatehousePolicies",
            swiftSettings: swiftSettings
        ),
        // For services behind the gateway: verifies the gateway-issued JWT of a request against the authorization
        // server's JWKS (fetched over HTTP, cached, unknown-kid refetch rule).
        .target(
            name: "GatehouseServiceAuth",
            dependencies: [
                "GatehouseTokens", "GatehouseHTTPClient", "GatehouseObservability",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The internal HTTP/1.1 client: keep-alive connections pooled per origin, responses read whole with a size
        // cap (the gateway's calls to the authorization server, health checks, backends' key-set fetches).
        .target(
            name: "GatehouseHTTPClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The echo service `gatehouse demo` runs behind the gateway.
        .target(
            name: "GatehouseDemoBackend",
            dependencies: [
                "GatehouseObservability", "GatehouseServiceAuth", "GatehouseTokens", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"), .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swiftSettings
        ),
        // Logging bootstrap (JSON lines, secrets redacted) and request ids, shared by both servers; trace context
        // (W3C, B3, X-Ray), sampling, a swift-distributed-tracing `Tracer` and the OTLP/HTTP span exporter.
        // A small Redis client on SwiftNIO (RESP2/RESP3, pipelining, a pool with timeouts and reconnect, AUTH, scripts)
        // and the cluster-wide GCRA script. Depends on NIO only, so the gateway and tools can both use it.
        .target(
            name: "GatehouseRedis",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GatehouseObservability",
            dependencies: [
                "GatehouseHTTPClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                // The admin listener both servers share (`AdminHTTP`: /metrics, /healthz, /readyz).
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // What the test targets share (`eventually`: poll for a condition instead of sleeping). A target under
        // Tests/ that no product names, so it is never linked into the `gatehouse` executable or a library product.
        .target(
            name: "GatehouseTestSupport",
            path: "Tests/GatehouseTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseTokensTests",
            dependencies: [
                "GatehouseTestSupport", "GatehouseTokens", "GatehouseServiceAuth", .product(name: "JWTKit", package: "jwt-kit"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseGatewayTests",
            dependencies: [
                "GatehouseTestSupport", "GatehouseGateway", "GatehouseConfiguration", "GatehouseDemoBackend", "GatehouseServiceAuth", "GatehouseObservability",
                "GatehousePolicies", "GatehouseRedis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseHTTPClientTests",
            dependencies: [
                "GatehouseHTTPClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseRedisTests",
            dependencies: [
                "GatehouseTestSupport", "GatehouseRedis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehousePoliciesTests",
            dependencies: ["GatehousePolicies"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseObservabilityTests",
            dependencies: ["GatehouseObservability", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseConfigurationTests",
            dependencies: ["GatehouseConfiguration"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseStoreTests",
            dependencies: [
                "GatehouseTestSupport", "GatehouseStore", "GatehouseStorePostgres", "GatehouseTokens", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // A connection of the tests' own, holding a lock that stalls a store's transaction mid-way.
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatehouseAuthServerTests",
            dependencies: [
                "GatehouseTestSupport", "GatehouseAuthServer", "GatehouseStore", "GatehouseConfiguration", "GatehouseTokens", "GatehouseGateway",
                "GatehouseServiceAuth", "GatehousePolicies",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
