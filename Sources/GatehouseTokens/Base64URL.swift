/// Base64url without padding (RFC 4648 §5), as OAuth and JOSE use it.
public enum Base64URL {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(index) }
        return table
    }()

    /// The standard alphabet (RFC 4648 §4), for HTTP Basic credentials.
    private static let standardReverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() { table[Int(byte)] = UInt8(index) }
        return table
    }()

    /// Decodes standard base64 (`+/`, padding optional); nil for other characters.
    public static func decodeStandard(_ text: some StringProtocol) -> [UInt8]? {
        decode(text, table: standardReverse)
    }

    /// Encodes bytes as base64url without padding.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let input = Array(bytes)
        var output = [UInt8]()
        output.reserveCapacity((input.count * 4 + 2) / 3)
        var index = 0
        while index + 3 <= input.count {
            let value = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
            output.append(alphabet[Int(value >> 18 & 63)])
            output.append(alphabet[Int(value >> 12 & 63)])
            output.append(alphabet[Int(value >> 6 & 63)])
            output.append(alphabet[Int(value & 63)])
            index += 3
        }
        let remaining = input.count - index
        if remaining == 1 {
            let value = UInt32(input[index]) << 16
            output.append(alphabet[Int(value >> 18 & 63)])
            output.append(alphabet[Int(value >> 12 & 63)])
        } else if remaining == 2 {
            let value = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8
            output.append(alphabet[Int(value >> 18 & 63)])
            output.append(alphabet[Int(value >> 12 & 63)])
            output.append(alphabet[Int(value >> 6 & 63)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Decodes base64url with or without padding; `nil` for any character outside the alphabet.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        decode(text, table: reverse)
    }

    private static func decode(_ text: some StringProtocol, table reverse: [UInt8]) -> [UInt8]? {
        var bits: UInt32 = 0
        var bitCount = 0
        var output = [UInt8]()
        output.reserveCapacity(text.utf8.count * 3 / 4)
        var sawPadding = false
        for byte in text.utf8 {
            if byte == UInt8(ascii: "=") { sawPadding = true; continue }
            if sawPadding { return nil }
            let value = reverse[Int(byte)]
            if value == 0xFF { return nil }
            bits = bits << 6 | UInt32(value)
            bitCount += 6
            if bitCount >= 8 {
                bitCount -= 8
                output.append(UInt8(truncatingIfNeeded: bits >> UInt32(bitCount)))
            }
        }
        if bitCount >= 6 { return nil }  // a single dangling character encodes no whole byte
        return output
    }
}
