#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One access-log line, the same shape for both servers: a JSON object on one line. Built field by field into
/// bytes (no Foundation, no dictionary); values that come from the request are escaped. Callers pass only what may
/// be logged: never a token, code, secret, cookie or `Authorization` value, and a path without its query.
///
/// Fields, in order: `time` (RFC 3339 UTC, milliseconds), `service`, `request_id`, `trace_id`, `span_id`, then the
/// caller's fields.
public struct AccessLogLine {
    public private(set) var bytes: [UInt8]

    /// Starts a line in a buffer of its own.
    public init(service: String, requestID: String, traceID: String = "", spanID: String = "", time: AccessLogClock.Time = AccessLogClock.now()) {
        var storage: [UInt8] = []
        self.init(service: service, requestID: requestID, traceID: traceID, spanID: spanID, time: time, reusing: &storage)
    }

    /// Starts a line in `storage`'s buffer (taken over, emptied; give it back with `recycle(into:)`): a loop that
    /// logs every request reuses one buffer instead of allocating one per line (measured: one allocation per
    /// request less).
    public init(service: String, requestID: String, traceID: String = "", spanID: String = "", time: AccessLogClock.Time = AccessLogClock.now(), reusing storage: inout [UInt8]) {
        self.init(service: service, requestID: requestID, time: time, storage: &storage)
        field("trace_id", traceID)
        field("span_id", spanID)
    }

    /// Starts a line in `storage`'s buffer with the trace and span ids written as hex in place: formatting them as
    /// strings first cost two allocations per line (a 32- and a 16-character string do not fit Swift's inline small
    /// string).
    public init(service: String, requestID: String, trace: TraceID, span: SpanID, time: AccessLogClock.Time = AccessLogClock.now(), reusing storage: inout [UInt8]) {
        self.init(service: service, requestID: requestID, time: time, storage: &storage)
        key("trace_id")
        bytes.append(UInt8(ascii: "\""))
        Hex.append(trace.high, to: &bytes)
        Hex.append(trace.low, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        key("span_id")
        bytes.append(UInt8(ascii: "\""))
        Hex.append(span.value, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// The fields before the trace ids: `time`, `service`, `request_id`.
    private init(service: String, requestID: String, time: AccessLogClock.Time, storage: inout [UInt8]) {
        bytes = []
        swap(&bytes, &storage)
        bytes.removeAll(keepingCapacity: true)
        if bytes.capacity < 512 { bytes.reserveCapacity(512) }
        bytes.append(contentsOf: "{\"time\":\"".utf8)
        AccessLogClock.appendRFC3339(time, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        field("service", service)
        field("request_id", requestID)
    }

    /// A string field (escaped).
    public mutating func field(_ name: StaticString, _ value: String) {
        key(name)
        JSONEscaping.appendQuoted(value, to: &bytes)
    }

    /// A `host:port` field, written without making the string first.
    public mutating func field(_ name: StaticString, host: String, port: Int) {
        key(name)
        JSONEscaping.appendQuoted(host, to: &bytes)
        bytes.removeLast()  // the closing quote: the port goes inside
        bytes.append(UInt8(ascii: ":"))
        appendInteger(port)
        bytes.append(UInt8(ascii: "\""))
    }

    /// An integer field.
    public mutating func field(_ name: StaticString, _ value: Int) {
        key(name)
        appendInteger(value)
    }

    /// A duration in milliseconds with microsecond precision (`0.532`).
    public mutating func milliseconds(_ name: StaticString, nanoseconds: Int64) {
        key(name)
        let micros = Int(max(nanoseconds, 0) / 1000)
        appendInteger(micros / 1000)
        bytes.append(UInt8(ascii: "."))
        let fraction = micros % 1000
        if fraction < 100 { bytes.append(UInt8(ascii: "0")) }
        if fraction < 10 { bytes.append(UInt8(ascii: "0")) }
        appendInteger(fraction)
    }

    /// Ends the line (`}` and a newline).
    public mutating func finish() {
        bytes.append(contentsOf: "}\n".utf8)
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Hands the line's buffer back for the next line.
    public mutating func recycle(into storage: inout [UInt8]) {
        swap(&bytes, &storage)
    }

    private mutating func key(_ name: StaticString) {
        // Byte by byte rather than `append(contentsOf: ",\"".utf8)`: the string views' generic append showed in the
        // profile of a logged request (every field starts here).
        bytes.append(UInt8(ascii: ","))
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func appendInteger(_ value: Int) {
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            appendInteger(-value)
            return
        }
        if value < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { digits in
            while rest > 0 {
                digits[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            }
            for index in stride(from: count - 1, through: 0, by: -1) { bytes.append(digits[index]) }
        }
    }
}

/// The wall clock of access-log lines: `clock_gettime(CLOCK_REALTIME)` (vDSO, no system call), formatted as
/// RFC 3339 with the date-and-time part computed once per second.
public enum AccessLogClock {
    public struct Time: Sendable {
        public var seconds: Int
        public var nanoseconds: Int
        public init(seconds: Int, nanoseconds: Int) {
            self.seconds = seconds
            self.nanoseconds = nanoseconds
        }
    }

    public static func now() -> Time {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Time(seconds: Int(spec.tv_sec), nanoseconds: Int(spec.tv_nsec))
    }

    /// `2026-12-05T19:30:01.123Z`.
    public static func appendRFC3339(_ time: Time, to bytes: inout [UInt8]) {
        appendDateTime(time.seconds, to: &bytes)
        let millis = time.nanoseconds / 1_000_000
        bytes.append(UInt8(ascii: "."))
        bytes.append(UInt8(ascii: "0") + UInt8(millis / 100))
        bytes.append(UInt8(ascii: "0") + UInt8(millis / 10 % 10))
        bytes.append(UInt8(ascii: "0") + UInt8(millis % 10))
        bytes.append(UInt8(ascii: "Z"))
    }

    /// `YYYY-MM-DDTHH:MM:SS` of Unix seconds (UTC).
    static func appendDateTime(_ seconds: Int, to bytes: inout [UInt8]) {
        let date = CivilDate(unixSeconds: seconds)
        let (year, month, day, secondOfDay) = (date.year, date.month, date.day, date.secondOfDay)
        func two(_ value: Int) {
            bytes.append(UInt8(ascii: "0") + UInt8(value / 10))
            bytes.append(UInt8(ascii: "0") + UInt8(value % 10))
        }
        two(year / 100)
        two(year % 100)
        bytes.append(UInt8(ascii: "-"))
        two(month)
        bytes.append(UInt8(ascii: "-"))
        two(day)
        bytes.append(UInt8(ascii: "T"))
        two(secondOfDay / 3600)
        bytes.append(UInt8(ascii: ":"))
        two(secondOfDay / 60 % 60)
        bytes.append(UInt8(ascii: ":"))
        two(secondOfDay % 60)
    }
}

/// A UTC calendar date and time of day from Unix seconds (Howard Hinnant's civil-from-days): the access log's
/// `time` and the authorization server's `Date` header.
public struct CivilDate: Sendable, Equatable {
    public let year: Int
    /// 1…12.
    public let month: Int
    /// 1…31.
    public let day: Int
    /// 0 (Sunday) … 6.
    public let weekday: Int
    public let secondOfDay: Int

    public init(unixSeconds seconds: Int) {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        secondOfDay = seconds - days * 86400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * mp + 2) / 5 + 1
        month = mp < 10 ? mp + 3 : mp - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        weekday = ((days % 7) + 11) % 7  // 1970-01-01 was a Thursday
    }
}
