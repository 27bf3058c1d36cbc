import Synchronization

/// Counters shared by threads (the authorization server's request tasks, the gateway's token fetches, which run
/// off the event loops): a fixed array of atomics, incremented with one relaxed atomic add — no lock.
/// `@unchecked`: the pointer never changes after `init` and what it points to is atomics.
public final class AtomicCounters: @unchecked Sendable {
    private let storage: UnsafeMutablePointer<Atomic<Int>>
    public let count: Int

    public init(count: Int) {
        self.count = count
        storage = .allocate(capacity: max(count, 1))
        for index in 0..<max(count, 1) { (storage + index).initialize(to: Atomic(0)) }
    }

    deinit {
        storage.deinitialize(count: max(count, 1))
        storage.deallocate()
    }

    /// Adds `amount` at `index` (ignored when out of range: label sets are fixed at creation).
    public func add(_ index: Int, _ amount: Int = 1) {
        guard index >= 0, index < count else { return }
        storage[index].wrappingAdd(amount, ordering: .relaxed)
    }

    public subscript(index: Int) -> Int {
        guard index >= 0, index < count else { return 0 }
        return storage[index].load(ordering: .relaxed)
    }

    public var values: [Int] { (0..<count).map { self[$0] } }
}

/// Histograms shared by threads, one per label set: per-bucket atomic counts and a sum in nanoseconds.
public final class AtomicHistograms: Sendable {
    public let buckets: HistogramBuckets
    public let labelSets: Int
    private let counts: AtomicCounters
    private let sums: AtomicCounters

    public init(buckets: HistogramBuckets, labelSets: Int) {
        self.buckets = buckets
        self.labelSets = labelSets
        counts = AtomicCounters(count: labelSets * buckets.slots)
        sums = AtomicCounters(count: labelSets)
    }

    public func observe(_ index: Int, nanoseconds: Int64) {
        guard index >= 0, index < labelSets else { return }
        let value = max(nanoseconds, 0)
        counts.add(index * buckets.slots + buckets.slot(nanoseconds: value))
        sums.add(index, Int(value))
    }

    /// Times `body` and records its duration under `index`.
    public func time<T>(_ index: Int, _ body: () async throws -> T) async rethrows -> T {
        let start = ContinuousClock.now
        defer { observe(index, nanoseconds: (ContinuousClock.now - start).nanoseconds) }
        return try await body()
    }

    public func bucketCounts(_ index: Int) -> [Int] { (0..<buckets.slots).map { counts[index * buckets.slots + $0] } }

    public func count(_ index: Int) -> Int { bucketCounts(index).reduce(0, +) }

    public func render(_ name: String, _ index: Int, labels: [(String, String)], into text: inout PrometheusText, skipEmpty: Bool = false) {
        let bucketCounts = bucketCounts(index)
        if skipEmpty && bucketCounts.allSatisfy({ $0 == 0 }) { return }
        text.histogram(name, labels, bounds: buckets.seconds, counts: bucketCounts, sum: Double(sums[index]) / 1e9)
    }
}

extension Duration {
    /// Whole nanoseconds (saturating).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow ? .max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
