/// Polls `condition` every `interval` until it holds or `timeout` passes; returns whether it held (so a caller writes
/// `#expect(await eventually { … })`). For conditions another task, process or connection makes true: a test waits for
/// the condition, never for a fixed time. The interval is the only sleep, and it is a pace, not a guess at how long
/// something takes.
///
/// Runs `condition` in the caller's isolation, so it may touch the caller's non-`Sendable` state.
/// - Parameters:
///   - timeout: how long the condition may take before the wait gives up (a failure, not a guess: generous).
///   - interval: the pause between two checks.
public func eventually(
    timeout: Duration = .seconds(10),
    interval: Duration = .milliseconds(10),
    isolation: isolated (any Actor)? = #isolation,
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
