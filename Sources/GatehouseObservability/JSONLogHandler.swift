import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A swift-log handler that writes one JSON object per line to standard error.
///
/// Metadata values under keys that name credentials (`token`, `password`, `secret`, `code`, `authorization`,
/// `cookie` …) are replaced by `"[redacted]"`, so that a careless log call cannot leak one.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, level: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.logLevel = level
        self.metadataProvider = metadataProvider
    }

    /// Installs the handler process-wide.
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Keys whose values are never written.
    static let sensitiveFragments = ["token", "password", "secret", "authorization", "cookie", "code_verifier", "credential"]
    static let sensitiveKeys: Set<String> = ["code", "assertion", "refresh", "session"]

    /// Keys the servers log on every request, known not to name a credential (checked without scanning).
    static let knownSafeKeys: Set<String> = ["method", "path", "status", "duration_us", "remote", "request_id", "path_taken", "service", "error"]

    static func isSensitive(_ key: String) -> Bool {
        if knownSafeKeys.contains(key) { return false }
        var key = key
        return key.withUTF8 { bytes in
            let lowered = bytes.map { (65...90).contains($0) ? $0 | 0x20 : $0 }
            if sensitiveKeyBytes.contains(where: { $0 == lowered }) { return true }
            return sensitiveFragmentBytes.contains { fragment in containsBytes(lowered, fragment) }
        }
    }

    private static let sensitiveKeyBytes = sensitiveKeys.map { Array($0.utf8) }
    private static let sensitiveFragmentBytes = sensitiveFragments.map { Array($0.utf8) }

    /// Substring search on bytes (String.contains from _StringProcessing cost 20% of a request's CPU here).
    private static func containsBytes(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        var start = 0
        while start + needle.count <= haystack.count {
            var matched = true
            for offset in 0..<needle.count where haystack[start + offset] != needle[offset] {
                matched = false
                break
            }
            if matched { return true }
            start += 1
        }
        return false
    }

    public func log(event: LogEvent) {
        var merged: Logger.Metadata
        if self.metadata.isEmpty && metadataProvider == nil {
            merged = event.metadata ?? [:]  // the usual case: no copy, no merge
        } else {
            merged = self.metadata
            if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
            if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        }
        var bytes = Self.formatBytes(level: event.level, label: label, message: "\(event.message)", metadata: merged, timestamp: Self.timestamp())
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }

    /// One JSON line (with trailing newline), credentials redacted.
    public static func format(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, timestamp: String) -> String {
        String(decoding: formatBytes(level: level, label: label, message: message, metadata: metadata, timestamp: timestamp), as: UTF8.self)
    }

    /// The same line as UTF-8 bytes, built without intermediate strings (this runs once per request).
    static func formatBytes(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, timestamp: String) -> [UInt8] {
        var output = [UInt8]()
        output.reserveCapacity(256)
        output.append(contentsOf: #"{"ts":"#.utf8)
        appendQuoted(timestamp, to: &output)
        output.append(contentsOf: #","level":"#.utf8)
        appendQuoted(level.rawValue, to: &output)
        output.append(contentsOf: #","logger":"#.utf8)
        appendQuoted(label, to: &output)
        output.append(contentsOf: #","msg":"#.utf8)
        appendQuoted(message, to: &output)
        for key in metadata.keys.sorted() {
            output.append(UInt8(ascii: ","))
            appendQuoted(key, to: &output)
            output.append(UInt8(ascii: ":"))
            if isSensitive(key) {
                output.append(contentsOf: #""[redacted]""#.utf8)
            } else {
                appendValue(metadata[key]!, to: &output)
            }
        }
        output.append(contentsOf: "}\n".utf8)
        return output
    }

    private static func appendValue(_ value: Logger.Metadata.Value, to output: inout [UInt8]) {
        switch value {
        case .string(let string): appendQuoted(string, to: &output)
        case .stringConvertible(let convertible): appendQuoted(convertible.description, to: &output)
        case .array(let values):
            output.append(UInt8(ascii: "["))
            for (index, item) in values.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                appendValue(item, to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .dictionary(let dictionary):
            output.append(UInt8(ascii: "{"))
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                appendQuoted(key, to: &output)
                output.append(UInt8(ascii: ":"))
                if isSensitive(key) { output.append(contentsOf: #""[redacted]""#.utf8) } else { appendValue(dictionary[key]!, to: &output) }
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    static func appendQuoted(_ value: String, to output: inout [UInt8]) {
        JSONEscaping.appendQuoted(value, to: &output)
    }

    /// UTC time in RFC 3339 with milliseconds (one allocation: this runs once per log line).
    static func timestamp() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(unsafeUninitializedCapacity: 24) { buffer in
            func put(_ value: Int, width: Int, at offset: Int, then separator: Unicode.Scalar) {
                var value = value
                for index in stride(from: offset + width - 1, through: offset, by: -1) {
                    buffer[index] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                buffer[offset + width] = UInt8(ascii: separator)
            }
            put(Int(parts.tm_year) + 1900, width: 4, at: 0, then: "-")
            put(Int(parts.tm_mon) + 1, width: 2, at: 5, then: "-")
            put(Int(parts.tm_mday), width: 2, at: 8, then: "T")
            put(Int(parts.tm_hour), width: 2, at: 11, then: ":")
            put(Int(parts.tm_min), width: 2, at: 14, then: ":")
            put(Int(parts.tm_sec), width: 2, at: 17, then: ".")
            put(Int(spec.tv_nsec / 1_000_000), width: 3, at: 20, then: "Z")
            return 24
        }
    }
}
