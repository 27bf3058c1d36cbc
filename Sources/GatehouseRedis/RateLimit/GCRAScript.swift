import NIOCore

/// The cluster-wide rate limit: one atomic Lua script per decision, the same GCRA as the local limiter.
///
/// With emission interval T (µs per request), burst b ≥ 1, τ = (b − 1)·T, maximum delay d (0 = refuse) and a
/// stored theoretical arrival time TAT (absent = a full bucket), at `now` (Redis's own `TIME`, one clock for all
/// gateways; Redis ≥ 5 replicates the script's effects, so reading the time in a writing script is allowed):
///
///     tat = max(TAT, now)
///     excess = tat − now + (n − 1)·T − τ          (n = cost; for n = 1 it is tat − now − τ)
///     excess ≤ 0  → allow,        TAT = tat + n·T
///     excess ≤ d  → delay excess, TAT = tat + n·T
///     otherwise   → refuse, retryAfter = excess (state unchanged)
///     remaining  = max(0, floor((τ + T − (TAT' − now)) / T))   (for n = 1 and a grant: floor((τ − (TAT' − T − now)) / T))
///     resetAfter = TAT' − now, where TAT' is the TAT after the decision (tat on a refusal)
///
/// and the key expires after resetAfter rounded up to whole milliseconds, so a key idle long enough to be a
/// full bucket again is gone (a full bucket = no key). The reply is
/// `{outcome (0 allow, 1 delay, 2 refuse), remaining, retryAfter or delay (µs), resetAfter (µs), now (µs)}`;
/// `now` is returned so tests can recompute the decision exactly.
///
/// Lua 5.1 numbers are doubles: every value here is an integer below 2^53 (`now` ≈ 1.7·10^15 µs), so sums and
/// products are exact; the one division is corrected to an exact floor, and TAT is stored with `%d` (Redis
/// would otherwise format a large number as `1.7e+15`).
public enum GCRAScript {
    public static let script = RedisScript(source)

    public static let source = """
        if redis.replicate_commands then redis.replicate_commands() end
        local interval = tonumber(ARGV[1])
        local burst = tonumber(ARGV[2])
        local max_delay = tonumber(ARGV[3])
        local cost = tonumber(ARGV[4])
        if not interval or interval < 1 or not burst or burst < 1 or not max_delay or max_delay < 0 or not cost or cost < 1 then
          return redis.error_reply('ERR gcra: bad arguments')
        end
        local function floordiv(a, m)
          local q = math.floor(a / m)
          if q * m > a then q = q - 1 elseif (q + 1) * m <= a then q = q + 1 end
          return q
        end
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
        local tau = (burst - 1) * interval
        local tat = now
        local stored = tonumber(redis.call('GET', KEYS[1]))
        if stored and stored > now then tat = stored end
        local excess = tat - now + (cost - 1) * interval - tau
        if excess > 0 and excess > max_delay then
          local remaining = floordiv(tau + interval - (tat - now), interval)
          if remaining < 0 then remaining = 0 end
          return {2, remaining, excess, tat - now, now}
        end
        local new_tat = tat + cost * interval
        local reset_after = new_tat - now
        local remaining = floordiv(tau + interval - reset_after, interval)
        if remaining < 0 then remaining = 0 end
        redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', floordiv(reset_after + 999, 1000))
        if excess > 0 then return {1, remaining, excess, reset_after, now} end
        return {0, remaining, 0, reset_after, now}
        """
}

/// What the cluster-wide limiter decided for one request (all durations in microseconds).
public struct ClusterRateLimitDecision: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        /// Go ahead now.
        case allow
        /// Go ahead after `delayMicros` (the request is admitted: its slot is taken).
        case delay(micros: Int64)
        /// Refused; try again after `retryAfterMicros`.
        case refuse(retryAfterMicros: Int64)
    }

    public var outcome: Outcome
    /// Requests that would be allowed right after this one without delay.
    public var remaining: Int
    /// Until the bucket is full again (the key's lifetime).
    public var resetAfterMicros: Int64
    /// Redis's clock when the script ran.
    public var nowMicros: Int64

    public init(outcome: Outcome, remaining: Int, resetAfterMicros: Int64, nowMicros: Int64) {
        self.outcome = outcome
        self.remaining = remaining
        self.resetAfterMicros = resetAfterMicros
        self.nowMicros = nowMicros
    }

    /// `retryAfter` of a refusal, the delay of a delayed grant, 0 for an immediate grant.
    public var retryAfterMicros: Int64 {
        switch outcome {
        case .allow: return 0
        case .delay(let micros): return micros
        case .refuse(let micros): return micros
        }
    }

    /// Maps the script's reply `{outcome, remaining, retryAfter, resetAfter, now}`.
    /// - Throws: `RedisError` `.protocol` when the reply has another shape.
    public init(reply: RESPValue) throws {
        guard let elements = reply.elements, elements.count == 5 else {
            throw RedisError.protocolViolation("GCRA reply is not an array of five integers")
        }
        // Read in place (the reply is the hot path's; a `compactMap` would allocate a second array per decision).
        func number(_ index: Int) -> Int64 { elements[index].int64 ?? -1 }
        let numbers = (number(0), number(1), number(2), number(3), number(4))
        guard elements.allSatisfy({ $0.int64 != nil }), numbers.1 >= 0, numbers.2 >= 0, numbers.3 >= 0 else {
            throw RedisError.protocolViolation("GCRA reply is not an array of five non-negative integers")
        }
        switch numbers.0 {
        case 0: outcome = .allow
        case 1: outcome = .delay(micros: numbers.2)
        case 2: outcome = .refuse(retryAfterMicros: numbers.2)
        default: throw RedisError.protocolViolation("GCRA reply has an unknown outcome \(numbers.0)")
        }
        remaining = Int(clamping: numbers.1)
        resetAfterMicros = numbers.3
        nowMicros = numbers.4
    }
}

/// One limit's `GCRAScript` call, encoded once: `EVALSHA <sha1> 1 <prefix><key> <T> <b> <d> <n>` with everything but
/// the key's suffix written ahead, so a decision writes three byte runs into the command buffer (no argument
/// strings, no array, no key concatenation per request).
public struct GCRACall: Sendable, Equatable {
    /// `*8`, `EVALSHA`, the script's SHA1, `1` (one key): RESP-encoded.
    let head: [UInt8]
    /// The key's prefix (`gatehouse:rl:<route>:<limit>:`).
    let keyPrefix: [UInt8]
    /// The four arguments, RESP-encoded.
    let tail: [UInt8]

    /// - Parameters: see `RedisClient.gcra(key:emissionIntervalMicros:burst:maxDelayMicros:cost:)`.
    public init(keyPrefix: String, emissionIntervalMicros: Int64, burst: Int, maxDelayMicros: Int64, cost: Int = 1) {
        func encoded(_ arguments: [String], count: Int? = nil) -> [UInt8] {
            var buffer = ByteBuffer()
            if let count {
                buffer.writeInteger(UInt8(ascii: "*"))
                RedisCommand.writeDecimal(count, into: &buffer)
            }
            for argument in arguments {
                buffer.writeInteger(UInt8(ascii: "$"))
                RedisCommand.writeDecimal(argument.utf8.count, into: &buffer)
                buffer.writeString(argument)
                buffer.writeInteger(UInt16(0x0D0A))
            }
            return Array(buffer.readableBytesView)
        }
        head = encoded(["EVALSHA", GCRAScript.script.sha1, "1"], count: 8)
        self.keyPrefix = Array(keyPrefix.utf8)
        tail = encoded([String(emissionIntervalMicros), String(burst), String(maxDelayMicros), String(cost)])
    }

    /// The command for the key `keyPrefix + key`.
    func command(key: String) -> Command { Command(call: self, key: key) }

    struct Command: RedisCommandEncodable {
        let call: GCRACall
        let key: String

        var name: String { "EVALSHA" }

        var encodedLength: Int {
            let keyLength = call.keyPrefix.count + key.utf8.count
            return call.head.count + 3 + RedisCommand.digits(keyLength) + keyLength + 2 + call.tail.count
        }

        func encode(into buffer: inout ByteBuffer) {
            buffer.writeBytes(call.head)
            buffer.writeInteger(UInt8(ascii: "$"))
            RedisCommand.writeDecimal(call.keyPrefix.count + key.utf8.count, into: &buffer)
            buffer.writeBytes(call.keyPrefix)
            buffer.writeString(key)
            buffer.writeInteger(UInt16(0x0D0A))
            buffer.writeBytes(call.tail)
        }
    }
}

extension RedisClient {
    /// One cluster-wide GCRA decision for `call`'s limit and `key` (the part after its prefix), sent on a connection
    /// of `eventLoop` (the caller's: no hop) and reported there to `completion` — one callback, no future chain.
    public func gcra(
        _ call: GCRACall, key: String, on eventLoop: any EventLoop,
        _ completion: @escaping @Sendable (Result<ClusterRateLimitDecision, any Error>) -> Void
    ) {
        evaluate(GCRAScript.script, call.command(key: key), on: eventLoop).whenComplete { result in
            completion(result.flatMap { reply in Result { try ClusterRateLimitDecision(reply: reply) } })
        }
    }

    /// One cluster-wide GCRA decision for `key` (see `GCRAScript`).
    ///
    /// - Parameters:
    ///   - emissionIntervalMicros: T = one second / rate, in µs (≥ 1).
    ///   - burst: b ≥ 1.
    ///   - maxDelayMicros: d; 0 refuses instead of delaying.
    ///   - cost: tokens taken at once (1...burst). Batching takes N per round trip and spends them locally: the
    ///     cluster never admits more than the limit (every token was granted by Redis), but tokens a gateway
    ///     holds unspent are invisible to the others, so the cluster may under-admit by up to G·(N − 1) requests
    ///     (G gateways) at any moment, and a gateway's local spending can be up to N − 1 requests early relative
    ///     to the exact per-request schedule.
    public func gcra(
        key: String, emissionIntervalMicros: Int64, burst: Int, maxDelayMicros: Int64, cost: Int = 1, on eventLoop: (any EventLoop)? = nil
    ) -> EventLoopFuture<ClusterRateLimitDecision> {
        evaluate(
            GCRAScript.script, keys: [key],
            arguments: [String(emissionIntervalMicros), String(burst), String(maxDelayMicros), String(cost)], on: eventLoop
        ).flatMapThrowing { try ClusterRateLimitDecision(reply: $0) }
    }
}
