/// Counts of results over a rolling window cut into buckets (Hystrix's model): a result goes into the bucket of its
/// time, and a bucket leaves the window whole, `buckets` bucket widths after it began. So the window covers between
/// `buckets − 1` and `buckets` bucket widths of history, and old results age out one bucket at a time.
struct RollingWindow: Sendable, Hashable {
    struct Bucket: Sendable, Hashable {
        /// `now / width` of the results it holds; `UInt64.max` = empty.
        var epoch = UInt64.max
        var requests = 0
        var failures = 0
        var slow = 0
    }

    struct Totals: Sendable, Hashable {
        var requests = 0
        var failures = 0
        var slow = 0
    }

    let width: UInt64
    private(set) var buckets: [Bucket]

    init(window: UInt64, buckets count: Int) {
        // Rounded up: the window is never shorter than configured.
        width = max(1, (window + UInt64(count) - 1) / UInt64(count))
        buckets = Array(repeating: Bucket(), count: count)
    }

    mutating func record(now: UInt64, failure: Bool, slow: Bool) {
        let epoch = now / width
        let slot = Int(epoch % UInt64(buckets.count))
        if buckets[slot].epoch != epoch { buckets[slot] = Bucket(epoch: epoch) }
        buckets[slot].requests += 1
        if failure { buckets[slot].failures += 1 }
        if slow { buckets[slot].slow += 1 }
    }

    func totals(now: UInt64) -> Totals {
        let current = now / width
        var totals = Totals()
        for bucket in buckets where bucket.epoch <= current && current - bucket.epoch < UInt64(buckets.count) {
            totals.requests += bucket.requests
            totals.failures += bucket.failures
            totals.slow += bucket.slow
        }
        return totals
    }

    mutating func reset() {
        for index in buckets.indices { buckets[index] = Bucket() }
    }
}
