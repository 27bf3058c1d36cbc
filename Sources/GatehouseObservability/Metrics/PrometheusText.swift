/// Writes the Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines, then samples
/// `name{label="value",…} value`. Label values are escaped (`\`, `"`, newline), help text too (`\`, newline).
/// Histograms are written from per-bucket (not cumulative) counts: `_bucket{le=…}` cumulative up to `+Inf`, then
/// `_sum` and `_count`.
public struct PrometheusText: Sendable {
    /// The `Content-Type` of a scrape answer.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public private(set) var text = ""

    public init() {
        text.reserveCapacity(16 * 1024)
    }

    /// A metric family's type.
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    /// The `# HELP` and `# TYPE` lines of a family (written even when it has no samples yet, so that dashboards
    /// and rules can be checked against a fresh server).
    public mutating func family(_ name: String, _ kind: Kind, help: String) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    /// One sample.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        text += name
        writeLabels(labels)
        text += " "
        text += Self.format(value)
        text += "\n"
    }

    /// One sample with an integer value.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Int) {
        text += name
        writeLabels(labels)
        text += " \(value)\n"
    }

    /// A histogram's samples for one label set.
    /// - Parameters:
    ///   - bounds: the buckets' upper bounds in seconds, ascending (`+Inf` is added).
    ///   - counts: observations per bucket, not cumulative; `bounds.count + 1` entries (the last is above every bound).
    ///   - sum: the sum of the observations in seconds.
    public mutating func histogram(_ name: String, _ labels: [(String, String)] = [], bounds: [Double], counts: some Collection<Int>, sum: Double) {
        var cumulative = 0
        var index = 0
        for count in counts {
            cumulative += count
            let le = index < bounds.count ? Self.format(bounds[index]) : "+Inf"
            sample(name + "_bucket", labels + [("le", le)], cumulative)
            index += 1
        }
        sample(name + "_sum", labels, sum)
        sample(name + "_count", labels, cumulative)
    }

    private mutating func writeLabels(_ labels: [(String, String)]) {
        guard !labels.isEmpty else { return }
        text += "{"
        for (index, (name, value)) in labels.enumerated() {
            if index > 0 { text += "," }
            text += name
            text += "=\""
            text += Self.escapeLabelValue(value)
            text += "\""
        }
        text += "}"
    }

    /// `\` → `\\`, `"` → `\"`, newline → `\n` (the format's three escapes for label values).
    public static func escapeLabelValue(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else { return value }
        var escaped = ""
        for character in value.unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }

    /// `\` → `\\`, newline → `\n` (help text).
    public static func escapeHelp(_ value: String) -> String {
        value.replacingBackslashesAndNewlines()
    }

    /// A sample value as Prometheus writes it: integers without a fraction (`1`, not `1.0`, so that `le="1"`
    /// matches what Go clients write), `+Inf`, `-Inf`, `NaN`.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == .infinity { return "+Inf" }
        if value == -.infinity { return "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}

extension String {
    fileprivate func replacingBackslashesAndNewlines() -> String {
        var escaped = ""
        for character in unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }
}
