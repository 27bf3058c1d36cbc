/// Counters confined to one event loop: plain integers in an array, indexed by a label set resolved to an index
/// when the configuration is compiled. No lock, no atomic, no allocation per increment (the array grows only when a
/// reload adds label values — a branch per increment otherwise). Summed over the loops at scrape time.
public struct LoopCounters: Sendable {
    public private(set) var values: [Int]

    public init(count: Int = 0) {
        values = [Int](repeating: 0, count: count)
    }

    /// Adds `amount` at `index`, growing the array when a reload added label values.
    public mutating func add(_ index: Int, _ amount: Int = 1) {
        if index >= values.count { grow(to: index + 1) }
        values[index] &+= amount
    }

    /// Sets `index` to `value` (a per-loop gauge: a queue's depth, a breaker's state).
    public mutating func set(_ index: Int, _ value: Int) {
        if index >= values.count { grow(to: index + 1) }
        values[index] = value
    }

    mutating func grow(to count: Int) {
        values.append(contentsOf: repeatElement(0, count: count - values.count))
    }

    /// A copy that shares no storage with this one (so that the loop's next increment does not copy the array).
    public func snapshot() -> LoopCounters {
        var copy = LoopCounters()
        copy.values = values.withUnsafeBufferPointer { Array($0) }
        return copy
    }

    /// Adds another loop's counters.
    public mutating func add(_ other: LoopCounters) {
        if other.values.count > values.count { grow(to: other.values.count) }
        for index in other.values.indices { values[index] &+= other.values[index] }
    }

    public subscript(index: Int) -> Int { index < values.count ? values[index] : 0 }
}

/// A histogram's bucket bounds, in seconds and in nanoseconds (the data path measures `NIODeadline` differences).
public struct HistogramBuckets: Sendable, Equatable {
    public let seconds: [Double]
    let nanoseconds: [Int64]

    public init(_ seconds: [Double]) {
        self.seconds = seconds
        self.nanoseconds = seconds.map { Int64(($0 * 1e9).rounded()) }
    }

    /// Slots per label set: one per bound plus `+Inf`.
    public var slots: Int { seconds.count + 1 }

    /// The slot of an observation: the first bound it does not exceed (`le`), else `+Inf`. A linear scan: with
    /// 15 bounds and most proxied requests in the first few buckets, it costs a handful of compares.
    public func slot(nanoseconds value: Int64) -> Int {
        var index = 0
        let bounds = nanoseconds
        while index < bounds.count, value > bounds[index] { index += 1 }
        return index
    }

    /// Request durations of a proxy: sub-millisecond to 10 s.
    public static let requestDuration = HistogramBuckets([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
}

/// Histograms confined to one event loop, one per label set (`index`): per-bucket counts and the sum in
/// nanoseconds, plain integers.
public struct LoopHistograms: Sendable {
    public let buckets: HistogramBuckets
    /// `index * buckets.slots + slot`.
    public private(set) var counts: LoopCounters
    /// Nanoseconds per label set.
    public private(set) var sums: LoopCounters

    public init(buckets: HistogramBuckets, labelSets: Int = 0) {
        self.buckets = buckets
        self.counts = LoopCounters(count: labelSets * buckets.slots)
        self.sums = LoopCounters(count: labelSets)
    }

    public mutating func observe(_ index: Int, nanoseconds: Int64) {
        let value = max(nanoseconds, 0)
        counts.add(index * buckets.slots + buckets.slot(nanoseconds: value))
        sums.add(index, Int(value))
    }

    public func snapshot() -> LoopHistograms {
        var copy = self
        copy.counts = counts.snapshot()
        copy.sums = sums.snapshot()
        return copy
    }

    public mutating func add(_ other: LoopHistograms) {
        counts.add(other.counts)
        sums.add(other.sums)
    }

    /// The per-bucket counts of label set `index`.
    public func bucketCounts(_ index: Int) -> [Int] {
        (0..<buckets.slots).map { counts[index * buckets.slots + $0] }
    }

    /// Observations of label set `index`.
    public func count(_ index: Int) -> Int { bucketCounts(index).reduce(0, +) }

    /// The sum of label set `index`, in seconds.
    public func sum(_ index: Int) -> Double { Double(sums[index]) / 1e9 }

    /// Writes label set `index` (nothing when it has no observation and `skipEmpty`).
    public func render(_ name: String, _ index: Int, labels: [(String, String)], into text: inout PrometheusText, skipEmpty: Bool = true) {
        let counts = bucketCounts(index)
        if skipEmpty && counts.allSatisfy({ $0 == 0 }) { return }
        text.histogram(name, labels, bounds: buckets.seconds, counts: counts, sum: sum(index))
    }
}
