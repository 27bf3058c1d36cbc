// swift-tools-version:6.1
// What the gateway's per-request metric updates cost: swift-metrics + swift-prometheus (handles made per request,
// and handles cached) against the per-loop arrays Gatehouse uses (the same LoopCounters.swift, linked in).
//
//   swift build -c release --package-path bench/metrics-cost && bench/metrics-cost/.build/release/MetricsCost
import PackageDescription

let package = Package(
    name: "metrics-cost",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
    ],
    targets: [
        .executableTarget(
            name: "MetricsCost",
            dependencies: [.product(name: "Metrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus")]
        )
    ]
)
