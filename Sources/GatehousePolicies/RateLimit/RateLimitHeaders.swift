/// The structured fields of draft-ietf-httpapi-ratelimit-headers (revision 10, September 2025): `RateLimit-Policy`
/// (§3: a List of quota policies, each a quoted policy name with the parameters `q`, the quota, §3.1, and `w`, the
/// window in seconds, §3.3) and `RateLimit` (§4: a List of the policies' current limits, each a quoted name with
/// `r`, the remaining quota, §4.1, and `t`, the seconds until the quota is restored, §4.2). Formatted once per rule
/// where possible: the policy value never changes, so the caller can keep it.
public enum RateLimitHeaders {
    /// `"per-client";q=20;w=1`: the quota is the bucket (`burst`) and the window the time the bucket takes to fill,
    /// `burst × unit / rate`, in whole seconds (rounded up, at least 1: `w` is an integer of seconds).
    public static func policy(_ rule: RateLimitRule) -> String {
        let window = max(1, RateLimiter.retryAfterSeconds(rule.fillTime))
        return "\(quoted(rule.name));q=\(rule.burst);w=\(window)"
    }

    /// `"per-client";r=19;t=1` for a decision of the rule named `name`: `r` is the remaining quota (0 when refused or
    /// delayed), `t` the seconds until the bucket is full again, rounded up — at least 1 when refused (a client must
    /// not come back before the refusal's own `Retry-After`).
    public static func rateLimit(name: String, decision: RateLimitDecision) -> String {
        let remaining: Int
        let reset: UInt64
        var minimum: UInt64 = 0
        switch decision {
        case .allow(let left, let resetAfter):
            remaining = left
            reset = resetAfter
        case .delay(_, let left, let resetAfter):
            remaining = left
            reset = resetAfter
        case .refuse(_, let resetAfter):
            remaining = 0
            reset = resetAfter
            minimum = 1
        }
        let seconds = reset / 1_000_000_000 + (reset % 1_000_000_000 == 0 ? 0 : 1)
        return "\(quoted(name));r=\(max(0, remaining));t=\(max(minimum, seconds))"
    }

    /// An sf-string (RFC 9651 §3.3.3): printable ASCII with `"` and `\` escaped. Other bytes cannot be represented
    /// and are replaced with `?` (the configuration should only allow names made of printable ASCII).
    static func quoted(_ name: String) -> String {
        var out = "\""
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0x22, 0x5C:
                out.append("\\")
                out.unicodeScalars.append(scalar)
            case 0x20...0x7E:
                out.unicodeScalars.append(scalar)
            default:
                out.append("?")
            }
        }
        out.append("\"")
        return out
    }
}
