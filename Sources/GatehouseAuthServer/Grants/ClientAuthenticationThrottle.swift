import NIOConcurrencyHelpers

/// Throttles failed client authentication (guessing a client secret at `/token`, `/introspect`, `/revoke`) per
/// client id and per IP address, with the login throttle's state machine (`LoginThrottle`) over the injected
/// clock. In memory and bounded (each side tracks at most `maxTrackedKeys` keys).
///
/// While a key is throttled every attempt for it is refused *without checking the secret*: otherwise a guesser
/// would still learn which guess was right. The answer is the same 401 `invalid_client` as a wrong secret
/// (RFC 6749 §5.2), with `Retry-After`: a client library treats it as what it is, an authentication failure,
/// and nothing in it tells a guesser more than a wrong secret does.
///
/// The per-client side lets anyone delay a known client id by failing on purpose, so it starts later and is
/// capped lower (1 min) than the per-address side; connections that already authenticated keep their
/// remembered authentication (`ClientAuthenticator.Memo`). Unknown client ids are counted per address only, so
/// a flood of made-up ids cannot fill the table.
final class ClientAuthenticationThrottle: Sendable {
    /// The two policies. Defaults: per client 20 failures free within 15 min, then 1 s doubling up to 60 s; per
    /// address 10 free, then 1 s doubling up to 15 min.
    struct Policy: Sendable {
        var perClient = LoginThrottle.Policy(maxFailuresBeforeDelay: 20, baseDelay: 1, maxDelay: 60, failureWindow: 900)
        var perAddress = LoginThrottle.Policy(maxFailuresBeforeDelay: 10, baseDelay: 1, maxDelay: 900, failureWindow: 900)
    }

    private let byClient: NIOLockedValueBox<LoginThrottle>
    private let byAddress: NIOLockedValueBox<LoginThrottle>
    private let clock: any AuthClock

    init(policy: Policy = .init(), clock: any AuthClock) {
        self.byClient = NIOLockedValueBox(LoginThrottle(policy: policy.perClient))
        self.byAddress = NIOLockedValueBox(LoginThrottle(policy: policy.perAddress))
        self.clock = clock
    }

    /// Seconds before this client id or address may try again, or nil when both may try now.
    func retryAfter(clientID: String, address: String) -> Int? {
        let now = clock.now()
        let client = byClient.withLockedValue { $0.retryAfter(clientID, now: now) } ?? 0
        let remote = byAddress.withLockedValue { $0.retryAfter(address, now: now) } ?? 0
        let wait = max(client, remote)
        return wait > 0 ? wait : nil
    }

    /// Counts a failure for the address, and for the client id when it names a registered client.
    func recordFailure(clientID: String?, address: String) {
        let now = clock.now()
        if let clientID { byClient.withLockedValue { $0.recordFailure(clientID, now: now) } }
        byAddress.withLockedValue { $0.recordFailure(address, now: now) }
    }
}
