/// An IP address block: 4 address bytes (IPv4) or 16 (IPv6) and a prefix length, host bits zero. Parsed from the
/// gateway's and the authorization server's `trusted_proxies`, and used to match peers against them.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    /// Network address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    public let address: [UInt8]
    /// Leading bits that must match: 0...32 for IPv4, 0...128 for IPv6.
    public let prefixLength: Int

    /// Nil unless the address has 4 or 16 bytes, the prefix fits, and no bit past the prefix is set.
    public init?(address: [UInt8], prefixLength: Int) {
        guard address.count == 4 || address.count == 16, (0...address.count * 8).contains(prefixLength) else { return nil }
        for (index, byte) in address.enumerated() {
            let prefixBits = max(0, min(8, prefixLength - index * 8))
            let hostMask: UInt8 = prefixBits == 8 ? 0 : UInt8(0xFF) >> prefixBits
            guard byte & hostMask == 0 else { return nil }
        }
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/n` or an IPv6 address (RFC 4291 text: `::` compression, embedded IPv4 in the last 32 bits)
    /// with `/n`. Without `/n` the block is the single address (/32 or /128). Nil when the syntax is wrong, the
    /// prefix is too long, or host bits are set (`10.0.0.1/8`). Zone indexes (`%eth0`) are refused.
    public static func parse(_ text: String) -> CIDR? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let bytes = parseAddress(String(parts[0])) else { return nil }
        var prefixLength = bytes.count * 8
        if parts.count == 2 {
            let digits = parts[1]
            guard (1...3).contains(digits.utf8.count), digits.utf8.allSatisfy({ isDigit($0) }), let value = Int(digits) else { return nil }
            prefixLength = value
        }
        return CIDR(address: bytes, prefixLength: prefixLength)
    }

    /// Parses one IPv4 (dotted decimal, no leading zeros) or IPv6 address into 4 or 16 bytes.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        let bytes = Array(text.utf8)
        return bytes.contains(UInt8(ascii: ":")) ? parseIPv6(bytes[...]) : parseIPv4(bytes[...])
    }

    /// The IPv4 address (4 bytes) an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) stands for;
    /// nil for any other address.
    public static func mappedIPv4(_ address: [UInt8]) -> ArraySlice<UInt8>? {
        guard address.count == 16, address[10] == 0xFF, address[11] == 0xFF, address.prefix(10).allSatisfy({ $0 == 0 }) else { return nil }
        return address.suffix(4)
    }

    /// Whether `address` (4 or 16 bytes) lies in this block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports IPv4 peers) is compared as the IPv4 address it stands for.
    public func contains(_ address: [UInt8]) -> Bool {
        var candidate = address[...]
        if self.address.count == 4, let mapped = Self.mappedIPv4(address) { candidate = mapped }
        guard candidate.count == self.address.count else { return false }
        let start = candidate.startIndex
        let wholeBytes = prefixLength / 8
        for index in 0..<wholeBytes where candidate[start + index] != self.address[index] { return false }
        let remainingBits = prefixLength % 8
        if remainingBits > 0 {
            let mask = UInt8(0xFF) << (8 - remainingBits)
            return candidate[start + wholeBytes] & mask == self.address[wholeBytes]
        }
        return true
    }

    /// `10.0.0.0/8`, `2001:db8::/32` (RFC 5952 form).
    public var description: String {
        if address.count == 4 {
            return address.map { String($0) }.joined(separator: ".") + "/\(prefixLength)"
        }
        let groups = (0..<8).map { UInt16(address[2 * $0]) << 8 | UInt16(address[2 * $0 + 1]) }
        // The first longest run of two or more zero groups becomes `::`.
        var bestStart = -1, bestLength = 0, runStart = -1
        for index in 0...8 {
            if index < 8 && groups[index] == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength { bestStart = runStart; bestLength = index - runStart }
                runStart = -1
            }
        }
        let hex = groups.map { String($0, radix: 16) }
        let text: String
        if bestLength >= 2 {
            let head = hex[..<bestStart].joined(separator: ":")
            let tail = hex[(bestStart + bestLength)...].joined(separator: ":")
            text = head + "::" + tail
        } else {
            text = hex.joined(separator: ":")
        }
        return text + "/\(prefixLength)"
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func hexValue(_ byte: UInt8) -> UInt16? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt16(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt16(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt16(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private static func parseIPv4(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        let parts = text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4)
        for part in parts {
            // One to three digits, and no leading zero (`010` would be octal to some parsers).
            guard (1...3).contains(part.count), part.allSatisfy({ isDigit($0) }),
                  part.count == 1 || part.first != UInt8(ascii: "0")
            else { return nil }
            let value = part.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard value <= 255 else { return nil }
            bytes.append(UInt8(value))
        }
        return bytes
    }

    private static func parseIPv6(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        let colon = UInt8(ascii: ":")
        // Find the one `::`, if any.
        var compression: ArraySlice<UInt8>.Index?
        var index = text.startIndex
        while index + 1 < text.endIndex {
            if text[index] == colon && text[index + 1] == colon {
                guard compression == nil else { return nil }
                compression = index
                index += 2
            } else {
                index += 1
            }
        }
        if let compression {
            // An embedded IPv4 address may only end the address, so only the part after `::` may hold one.
            guard let head = parseGroups(text[..<compression], allowIPv4: false),
                  let tail = parseGroups(text[(compression + 2)...], allowIPv4: true),
                  head.count + tail.count <= 14  // `::` stands for at least one zero group
            else { return nil }
            return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
        }
        guard let bytes = parseGroups(text, allowIPv4: true), bytes.count == 16 else { return nil }
        return bytes
    }

    /// Colon-separated groups of 1...4 hex digits (the last may be dotted IPv4); empty text is no groups.
    private static func parseGroups(_ text: ArraySlice<UInt8>, allowIPv4: Bool) -> [UInt8]? {
        guard !text.isEmpty else { return [] }
        let groups = text.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard groups.count <= 8 else { return nil }
        var bytes: [UInt8] = []
        for (position, group) in groups.enumerated() {
            if allowIPv4 && position == groups.count - 1 && group.contains(UInt8(ascii: ".")) {
                guard let ipv4 = parseIPv4(group) else { return nil }
                bytes += ipv4
                continue
            }
            guard (1...4).contains(group.count) else { return nil }
            var value: UInt16 = 0
            for byte in group {
                guard let digit = hexValue(byte) else { return nil }
                value = value << 4 | digit
            }
            bytes.append(UInt8(value >> 8))
            bytes.append(UInt8(value & 0xFF))
        }
        return bytes
    }
}

extension CIDR {
    /// The canonical text of a 4- or 16-byte address: dotted IPv4, RFC 5952 IPv6, and an IPv4-mapped IPv6
    /// address (`::ffff:a.b.c.d`) as the IPv4 address it stands for — so one client is one throttle key however
    /// its address was written.
    public static func canonicalText(_ address: [UInt8]) -> String {
        let bytes = mappedIPv4(address).map(Array.init) ?? address
        let block = CIDR(address: bytes, prefixLength: bytes.count * 8)
        let text = block?.description ?? ""
        return String(text.prefix { $0 != "/" })
    }
}
