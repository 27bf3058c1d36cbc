import NIOCore

/// Per-event-loop state of the data path: the upstream pool and the load balancers' counters. Confined to its
/// loop, so choosing a target and leasing a connection take no lock.
final class LoopState {
    let pool: UpstreamPool
    private var roundRobin: [ObjectIdentifier: Int] = [:]
    /// Requests in flight per target from this loop (least-request balancing).
    private var active: [TargetKey: Int] = [:]

    init(eventLoop: any EventLoop) {
        self.pool = UpstreamPool(eventLoop: eventLoop)
    }

    /// Picks a target: round robin, or the less loaded of two random ones (power of two choices). Unavailable
    /// targets (down, ejected, or in `excluding`) are skipped; nil when none is left.
    func pickTarget(_ cluster: CompiledCluster, excluding: TargetKey? = nil, now: NIODeadline) -> TargetKey? {
        let targets = cluster.targets
        let count = targets.count
        guard count > 0 else { return nil }
        switch cluster.loadBalancing {
        case .roundRobin:
            let key = ObjectIdentifier(cluster)
            let start = roundRobin[key, default: 0]
            for offset in 0..<count {
                let target = targets[(start + offset) % count]
                if target != excluding, cluster.health.isAvailable(target, now: now) {
                    roundRobin[key] = (start + offset + 1) % count
                    return target
                }
            }
            return nil
        case .leastRequest:
            let candidates = targets.filter { $0 != excluding && cluster.health.isAvailable($0, now: now) }
            guard !candidates.isEmpty else { return nil }
            if candidates.count == 1 { return candidates[0] }
            let first = candidates.randomElement()!
            var second = candidates.randomElement()!
            while second == first { second = candidates.randomElement()! }
            return active[first, default: 0] <= active[second, default: 0] ? first : second
        }
    }

    func started(_ target: TargetKey) { active[target, default: 0] += 1 }
    func finished(_ target: TargetKey) { active[target, default: 1] -= 1 }
}

/// `LoopState` for every loop of the group, created up front. Each state is only ever touched on its own loop
/// (`state(for:)` asserts it), which is what makes the unchecked Sendable sound.
final class LoopStates: @unchecked Sendable {
    private struct Entry {
        let loop: any EventLoop
        let state: LoopState
    }

    private let states: [ObjectIdentifier: Entry]

    init(group: any EventLoopGroup) {
        var states: [ObjectIdentifier: Entry] = [:]
        for loop in group.makeIterator() {
            states[ObjectIdentifier(loop)] = Entry(loop: loop, state: LoopState(eventLoop: loop))
        }
        self.states = states
    }

    func state(for loop: any EventLoop) -> LoopState {
        loop.assertInEventLoop()
        return states[ObjectIdentifier(loop)]!.state
    }

    /// Runs `body` on every loop with its state.
    func forEach(_ body: @escaping @Sendable (LoopState) -> Void) {
        for entry in states.values {
            let loop = entry.loop
            loop.execute { body(self.state(for: loop)) }
        }
    }
}
