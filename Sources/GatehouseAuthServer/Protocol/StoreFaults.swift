import GatehouseStore

extension OAuthError {
    /// `Retry-After` (seconds) when the store is unreachable: about how long a database restart or a failover
    /// takes to be noticed and reconnected (postgres-nio's pool retries from 100 ms, backing off by 1.25×).
    public static let storeUnavailableRetryAfter = 2

    /// The one mapping of an unexpected failure to an RFC 6749 §5.2 error: a store that cannot be reached is
    /// `temporarily_unavailable` (503 with `Retry-After`: the client may retry, nothing it sent was wrong);
    /// anything else is `server_error` (500). The description never carries the underlying error.
    static func serverFault(_ error: any Error) -> OAuthError {
        if let error = error as? StoreError, error.code == .unavailable {
            return OAuthError(.temporarilyUnavailable, "the service is temporarily unavailable; retry later", retryAfter: storeUnavailableRetryAfter)
        }
        return OAuthError(.serverError, "the server could not complete the request")
    }
}
