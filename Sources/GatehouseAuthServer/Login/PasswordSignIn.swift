import GatehouseStore

extension TokenService {
    /// Checks a password under the login throttle (per username and per address). Shared by the login page and
    /// the password grant.
    ///
    /// The attempt is counted before the password is hashed and settled after: with the check before the hash and
    /// the count after it, N concurrent guesses for one username all passed the check and were all evaluated.
    /// A refusal by a full hashing queue (`temporarily_unavailable`, 503 with `Retry-After`) counts as no attempt.
    func verifyPassword(username: String, password: String, remoteAddress: String) async throws -> UserRecord {
        let userKey = "user:" + username.lowercased()
        let addressKey = "ip:" + remoteAddress
        let now = clock.now()
        if let wait = throttle.withLockedValue({ $0.reserve([userKey, addressKey], now: now) }) {
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
            let settledAt = clock.now()
            throttle.withLockedValue { throttle in
                throttle.settle(userKey, failed: false, now: settledAt)
                throttle.settle(addressKey, failed: false, now: settledAt)
            }
            if let busy = error as? PasswordHasher.Busy {
                logger.warning("sign-in refused: password hashing queue full", metadata: ["remote": "\(remoteAddress)", "retry_after": "\(busy.retryAfter)"])
                throw OAuthError(.temporarilyUnavailable, "too many sign-ins in progress; try again in \(busy.retryAfter) s", retryAfter: busy.retryAfter)
            }
            throw error
        }
        let settledAt = clock.now()
        guard let user, matches else {
            throttle.withLockedValue { throttle in
                throttle.settle(userKey, failed: true, now: settledAt)
                throttle.settle(addressKey, failed: true, now: settledAt)
            }
            logger.notice("sign-in failed", metadata: ["remote": "\(remoteAddress)"])
            throw OAuthError(.invalidGrant, "the username or password is wrong")
        }
        // Only the user's count resets: one good account must not wipe an address's record of guessing others.
        throttle.withLockedValue { throttle in
            throttle.recordSuccess(userKey)
            throttle.settle(addressKey, failed: false, now: settledAt)
        }
        return user
    }
}
