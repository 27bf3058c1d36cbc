/// `application/x-www-form-urlencoded` parameters (also used for query strings), parsed strictly:
/// a parameter given twice is an error (RFC 6749 §3.1, §3.2), and invalid percent-encoding is an error.
public struct FormParameters: Sendable, Equatable {
    public private(set) var values: [String: String]

    public init(_ values: [String: String] = [:]) {
        self.values = values
    }

    /// Why a form could not be parsed.
    public enum ParseError: Error, Equatable {
        case duplicate(String)
        case badEncoding
    }

    /// Parses `a=b&c=d`. Empty values count as absent.
    public static func parse(_ text: some StringProtocol) throws(ParseError) -> FormParameters {
        guard !text.isEmpty else { return FormParameters() }
        var values: [String: String] = [:]
        var sawEmpty = false
        let string = String(text)
        // Split on bytes, not Characters: `&` and `=` are ASCII, and grapheme breaking is slow.
        for pair in string.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let equals = pair.firstIndex(of: UInt8(ascii: "="))
            guard let name = decode(Substring(equals.map { pair[..<$0] } ?? pair)) else { throw .badEncoding }
            guard let value = equals.map({ decode(Substring(pair[pair.index(after: $0)...])) }) ?? "" else { throw .badEncoding }
            guard values[name] == nil else { throw .duplicate(name) }
            if value.isEmpty { sawEmpty = true }
            values[name] = value
        }
        return FormParameters(sawEmpty ? values.filter { !$0.value.isEmpty } : values)
    }

    public subscript(name: String) -> String? { values[name] }

    /// Percent-decoding with `+` as space; `nil` for malformed escapes or invalid UTF-8.
    public static func decode(_ text: some StringProtocol) -> String? {
        if !text.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) { return String(text) }
        var bytes = [UInt8]()
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// Percent-encodes for a query or form value (everything but unreserved characters).
    public static func encode(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var output = [UInt8]()
        output.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                output.append(byte)
            default:
                output.append(UInt8(ascii: "%"))
                output.append(hex[Int(byte >> 4)])
                output.append(hex[Int(byte & 0xF)])
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Encodes pairs in order as `a=b&c=d`, skipping nil values.
    public static func encode(_ pairs: [(String, String?)]) -> String {
        pairs.compactMap { name, value in value.map { "\(encode(name))=\(encode($0))" } }.joined(separator: "&")
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
