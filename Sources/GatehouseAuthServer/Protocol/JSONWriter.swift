/// Builds small JSON objects without Foundation (responses on the token path are built per request).
public struct JSONWriter: Sendable {
    private var output = "{"
    private var first = true

    public init() {}

    public mutating func add(_ key: String, _ value: String?) {
        guard let value else { return }
        separator(key)
        Self.appendQuoted(value, to: &output)
    }

    public mutating func add(_ key: String, _ value: Int?) {
        guard let value else { return }
        separator(key)
        output += String(value)
    }

    public mutating func add(_ key: String, _ value: Bool) {
        separator(key)
        output += value ? "true" : "false"
    }

    public mutating func add(_ key: String, _ values: [String]) {
        separator(key)
        output += "["
        for (index, value) in values.enumerated() {
            if index > 0 { output += "," }
            Self.appendQuoted(value, to: &output)
        }
        output += "]"
    }

    /// Adds a pre-encoded JSON value.
    public mutating func addRaw(_ key: String, _ json: String) {
        separator(key)
        output += json
    }

    public func finish() -> String { output + "}" }

    private mutating func separator(_ key: String) {
        if !first { output += "," }
        first = false
        Self.appendQuoted(key, to: &output)
        output += ":"
    }

    /// Appends a JSON string literal with the escapes RFC 8259 requires.
    public static func appendQuoted(_ value: String, to output: inout String) {
        output += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case "<": output += "\\u003c"  // harmless in JSON, safe if ever embedded in HTML
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
}
