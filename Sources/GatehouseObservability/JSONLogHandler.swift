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

    static func isSensitive(_ key: String) -> Bool {
        let lowered = key.lowercased()
        return sensitiveKeys.contains(lowered) || sensitiveFragments.contains { lowered.contains($0) }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let line = Self.format(
            level: event.level, label: label, message: "\(event.message)", metadata: merged,
            timestamp: Self.timestamp()
        )
        var bytes = Array(line.utf8)
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
        var output = "{\"ts\":"
        appendQuoted(timestamp, to: &output)
        output += ",\"level\":"
        appendQuoted(level.rawValue, to: &output)
        output += ",\"logger\":"
        appendQuoted(label, to: &output)
        output += ",\"msg\":"
        appendQuoted(message, to: &output)
        for key in metadata.keys.sorted() {
            output += ","
            appendQuoted(key, to: &output)
            output += ":"
            if isSensitive(key) {
                output += "\"[redacted]\""
            } else {
                appendValue(metadata[key]!, to: &output)
            }
        }
        output += "}\n"
        return output
    }

    private static func appendValue(_ value: Logger.Metadata.Value, to output: inout String) {
        switch value {
        case .string(let string): appendQuoted(string, to: &output)
        case .stringConvertible(let convertible): appendQuoted(convertible.description, to: &output)
        case .array(let values):
            output += "["
            for (index, item) in values.enumerated() {
                if index > 0 { output += "," }
                appendValue(item, to: &output)
            }
            output += "]"
        case .dictionary(let dictionary):
            output += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { output += "," }
                appendQuoted(key, to: &output)
                output += ":"
                if isSensitive(key) { output += "\"[redacted]\"" } else { appendValue(dictionary[key]!, to: &output) }
            }
            output += "}"
        }
    }

    static func appendQuoted(_ value: String, to output: inout String) {
        output += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
    }

    /// UTC time in RFC 3339 with milliseconds.
    static func timestamp() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(spec.tv_nsec / 1_000_000), 3))Z"
    }
}
