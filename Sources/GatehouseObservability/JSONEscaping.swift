/// JSON string literals (RFC 8259), written as UTF-8 bytes without Foundation. The one escaping routine behind the
/// log handler, the authorization server's responses, the gateway's error bodies and the demo backend's echo.
public enum JSONEscaping {
    /// Appends `value` as a quoted JSON string: `"` and `\` escaped, control characters as `\n`, `\r`, `\t` or
    /// `\u00XX`. With `escapingLessThan`, `<` becomes `\u003c` (harmless in JSON, safe if it is ever embedded in HTML).
    public static func appendQuoted(_ value: String, to output: inout [UInt8], escapingLessThan: Bool = false) {
        output.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { bytes in
            let lessThan: UInt8 = escapingLessThan ? UInt8(ascii: "<") : UInt8(ascii: "\"")
            if !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == lessThan }) {
                output.append(contentsOf: bytes)  // the common case: nothing to escape
                return
            }
            let hex = Array("0123456789abcdef".utf8)
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "\""): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case UInt8(ascii: "\n"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case UInt8(ascii: "\r"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case UInt8(ascii: "\t"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                case 0..<0x20: output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 15)]])
                case UInt8(ascii: "<") where escapingLessThan: output.append(contentsOf: Array("\\u003c".utf8))
                default: output.append(byte)
                }
            }
        }
        output.append(UInt8(ascii: "\""))
    }

    /// `value` as a quoted JSON string.
    public static func quoted(_ value: String, escapingLessThan: Bool = false) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(value.utf8.count + 2)
        appendQuoted(value, to: &output, escapingLessThan: escapingLessThan)
        return String(decoding: output, as: UTF8.self)
    }
}
