import GatehouseObservability

/// Builds small JSON objects as UTF-8 bytes, without Foundation: token and introspection responses are built
/// per request, and appending to a `String` one unicode scalar at a time cost 6% of introspection's CPU.
public struct JSONWriter: Sendable {
    private var output: [UInt8]
    private var first = true

    public init(capacity: Int = 256) {
        output = []
        output.reserveCapacity(capacity)
        output.append(UInt8(ascii: "{"))
    }

    public mutating func add(_ key: String, _ value: String?) {
        guard let value else { return }
        separator(key)
        Self.appendQuoted(value, to: &output)
    }

    public mutating func add(_ key: String, _ value: Int?) {
        guard let value else { return }
        separator(key)
        Self.appendInteger(value, to: &output)
    }

    public mutating func add(_ key: String, _ value: Bool) {
        separator(key)
        output.append(contentsOf: value ? Self.trueBytes : Self.falseBytes)
    }

    public mutating func add(_ key: String, _ values: [String]) {
        separator(key)
        output.append(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            Self.appendQuoted(value, to: &output)
        }
        output.append(UInt8(ascii: "]"))
    }

    /// Adds a pre-encoded JSON value.
    public mutating func addRaw(_ key: String, _ json: String) {
        separator(key)
        output.append(contentsOf: json.utf8)
    }

    /// The finished object as bytes.
    public func finishBytes() -> [UInt8] { output + [UInt8(ascii: "}")] }

    public func finish() -> String { String(decoding: finishBytes(), as: UTF8.self) }

    private static let trueBytes = Array("true".utf8)
    private static let falseBytes = Array("false".utf8)

    private mutating func separator(_ key: String) {
        if !first { output.append(UInt8(ascii: ",")) }
        first = false
        Self.appendQuoted(key, to: &output)
        output.append(UInt8(ascii: ":"))
    }

    static func appendInteger(_ value: Int, to output: inout [UInt8]) {
        if value == 0 {
            output.append(UInt8(ascii: "0"))
            return
        }
        var magnitude = value.magnitude
        var digits: [UInt8] = []
        digits.reserveCapacity(20)
        while magnitude > 0 {
            digits.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
            magnitude /= 10
        }
        if value < 0 { output.append(UInt8(ascii: "-")) }
        output.append(contentsOf: digits.reversed())
    }

    /// Appends a JSON string literal, `<` escaped too (see `JSONEscaping`).
    public static func appendQuoted(_ value: String, to output: inout [UInt8]) {
        JSONEscaping.appendQuoted(value, to: &output, escapingLessThan: true)
    }
}
