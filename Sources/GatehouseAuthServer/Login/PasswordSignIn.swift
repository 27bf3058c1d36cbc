import GatehouseStore

extension TokenService {
    /// Checks a password under the login throttle (per username and per address). Shared by the login page and
    /// the password grant.
    ///
    /// The attempt is counted before the password is hashed and settled after: with the check before the hash and
    /// the count after it, N concurrent guesses for one username all passed the check and were all evaluated. With
    /// PostgreSQL the counters are in the database, so the budget is shared by every replica.
    /// A refusal by a full hashing queue (`temporarily_unavailable`, 503 with `Retry-After`) counts as no attempt.
    func verifyPassword(username: String, password: String, remoteAddress: String) async throws -> UserRecord {
        let keys = ["user:" + username.lowercased(), "ip:" + remoteAddress]
        let now = clock.now()
        if let wait = try await throttled({ try await throttle.reserve(keys, now: now) }) {
            throw OAuthError(.invalidGrant, "too many failed sign-in attempts; try again in \(wait) s", retryAfter: wait)
        }
        let user: UserRecord?
        let matches: Bool
        do {
            user = try await store.user(username: username)
            if let user {
                matches = try await passwords.verify(password, hash: user.passwordHash)
            } else {
                matches = try await passwords.verifyDecoy(password)
            }
        } catch {
            try await throttled { try await throttle.settle(keys, [.notFailed, .notFailed], now: clock.now()) }
            if let busy = error as? PasswordHasher.Busy {
                logger.warning("sign-in refused: password hashing queue full", metadata: ["remote": "\(remoteAddress)", "retry_after": "\(busy.retryAfter)"])
                throw OAuthError(.temporarilyUnavailable, "too many sign-ins in progress; try again in \(busy.retryAfter) s", retryAfter: busy.retryAfter)
            }
            throw error
        }
        guard let user, matches else {
            try await throttled { try await throttle.settle(keys, [.failed, .failed], now: clock.now()) }
            logger.notice("sign-in failed", metadata: ["remote": "\(remoteAddress)"])
            throw OAuthError(.invalidGrant, "the username or password is wrong")
        }
        // Only the user's count resets: one good account must not wipe an address's record of guessing others.
        try await throttled { try await throttle.settle(keys, [.succeeded, .notFailed], now: clock.now()) }
        return user
    }

    /// Runs a step of the throttle; a shared store that fails (PostgreSQL down) refuses the sign-in with
    /// `temporarily_unavailable` (503 with `Retry-After`): an attempt that cannot be counted is not evaluated, and
    /// one whose outcome cannot be recorded is not answered (it stays counted as a failure until its reservation
    /// goes stale). Never a guess let through unthrottled, never a 500.
    private func throttled<T>(_ step: () async throws -> T) async throws -> T {
        do {
            return try await step()
        } catch {
            logger.warning("sign-in refused: login throttle unavailable", metadata: ["error": "\(error)"])
            throw OAuthError(
                .temporarilyUnavailable, "sign-in is temporarily unavailable; try again in \(OAuthError.storeUnavailableRetryAfter) s",
                retryAfter: OAuthError.storeUnavailableRetryAfter
            )
        }
    }
}
