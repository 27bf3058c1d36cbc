/// A 16-byte W3C trace id (never all zero when valid).
public struct TraceID: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    public var isValid: Bool { high != 0 || low != 0 }

    /// 32 lower-case hex digits.
    public var description: String { Hex.format(high, low) }

    /// The 16 bytes, big-endian (OTLP's encoding).
    public var bytes: [UInt8] { Hex.bytes(high) + Hex.bytes(low) }
}

/// An 8-byte span id (never zero when valid).
public struct SpanID: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) {
        self.value = value
    }

    public var isValid: Bool { value != 0 }

    /// 16 lower-case hex digits.
    public var description: String { Hex.format(value) }

    public var bytes: [UInt8] { Hex.bytes(value) }
}

/// Lower-case hex: parsing without allocation, formatting into one string.
enum Hex {
    /// The value of a lower-case hex digit; nil for anything else (upper case included: W3C Trace Context requires
    /// lower case).
    @inline(__always)
    static func digit(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte &- UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(byte &- UInt8(ascii: "a") &+ 10)
        default: nil
        }
    }

    /// Up to 16 hex digits as a number; nil when any is not lower-case hex or the count is wrong.
    static func parse<C: Collection>(_ bytes: C, count: Int) -> UInt64? where C.Element == UInt8 {
        guard bytes.count == count, count <= 16 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            guard let digit = digit(byte) else { return nil }
            value = value << 4 | digit
        }
        return value
    }

    /// 16 or 32 hex digits as a trace id (16: a 64-bit B3 id, left-padded with zeros).
    static func parseTraceID<C: Collection>(_ bytes: C) -> TraceID? where C.Element == UInt8 {
        switch bytes.count {
        case 16:
            guard let low = parse(bytes, count: 16) else { return nil }
            return TraceID(high: 0, low: low)
        case 32:
            let split = bytes.index(bytes.startIndex, offsetBy: 16)
            guard let high = parse(bytes[..<split], count: 16), let low = parse(bytes[split...], count: 16) else { return nil }
            return TraceID(high: high, low: low)
        default:
            return nil
        }
    }

    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func format(_ values: UInt64...) -> String {
        String(unsafeUninitializedCapacity: values.count * 16) { buffer in
            var index = 0
            for value in values {
                for shift in stride(from: 60, through: 0, by: -4) {
                    buffer[index] = digits[Int((value >> UInt64(shift)) & 0xF)]
                    index += 1
                }
            }
            return index
        }
    }

    /// 16 hex digits of `value` at `offset`.
    @inline(__always)
    static func write(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        for index in 0..<16 {
            buffer[offset + index] = digits[Int((value >> UInt64(60 - index * 4)) & 0xF)]
        }
    }

    /// 16 hex digits of `value` appended to `bytes`.
    static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        // Into a buffer on the stack, then one append (an append per digit checked capacity and uniqueness 16 times).
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { buffer in
            write(value, into: buffer, at: 0)
            bytes.append(contentsOf: UnsafeBufferPointer(buffer))
        }
    }

    static func format(byte: UInt8) -> String {
        String(unsafeUninitializedCapacity: 2) { buffer in
            buffer[0] = digits[Int(byte >> 4)]
            buffer[1] = digits[Int(byte & 0xF)]
            return 2
        }
    }

    static func bytes(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> UInt64(56 - $0 * 8)) }
    }
}

/// Trace and span ids from a fast non-cryptographic generator (xoshiro256**): one per event loop (or per task),
/// mutated without a lock; seeded once from the system's random source, so no system call per id.
///
/// Ids need to be unique, not secret: W3C Trace Context asks for randomness, not unpredictability.
public struct TraceIDGenerator: Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init() {
        var system = SystemRandomNumberGenerator()
        self.init(seed: (system.next(), system.next(), system.next(), system.next()))
    }

    /// A generator with a fixed seed (tests).
    public init(seed: (UInt64, UInt64, UInt64, UInt64)) {
        state = seed
        if state == (0, 0, 0, 0) { state.0 = 0x9E37_79B9_7F4A_7C15 }
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = rotateLeft(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotateLeft(state.3, 45)
        return result
    }

    @inline(__always)
    private func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// A new span id (never zero).
    public mutating func nextSpanID() -> SpanID {
        while true {
            let value = next()
            if value != 0 { return SpanID(value) }
        }
    }

    /// A new trace id. With `epochSeconds`, the first four bytes are that time (what AWS X-Ray requires of its
    /// trace ids, so that a trace started here is accepted when `xray` is propagated).
    public mutating func nextTraceID(epochSeconds: UInt32? = nil) -> TraceID {
        while true {
            var high = next()
            let low = next()
            if let epochSeconds { high = UInt64(epochSeconds) << 32 | (high & 0xFFFF_FFFF) }
            let id = TraceID(high: high, low: low)
            if id.isValid { return id }
        }
    }
}
