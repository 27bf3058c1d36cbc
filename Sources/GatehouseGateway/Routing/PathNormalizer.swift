/// The request-target of one request, reduced to the path the gateway routes on and the query it forwards.
public struct NormalizedTarget: Sendable, Equatable {
    /// The normalized path: always starts with `/`, ASCII only.
    public var path: String
    /// Everything after the first `?`, byte-for-byte; `nil` when the target has no `?`, `""` when it ends with `?`.
    public var query: String?
    /// The authority of an absolute-form target (`http://authority/path`); nil for origin-form.
    public var authority: String?

    public init(path: String, query: String? = nil, authority: String? = nil) {
        self.path = path
        self.query = query
        self.authority = authority
    }
}

/// Why a request-target was refused: 400 Bad Request for every code but `tooLong` (414 URI Too Long, RFC 9112 §3).
public struct PathError: Error, Equatable, Sendable {
    public enum Code: String, Sendable {
        case notOriginForm, encodedSlash, encodedBackslash, nul, controlCharacter, invalidPercentEncoding, fragment, tooLong
        /// `%25` encoding a `.`, `/`, `\` or `%` (`%252e`, `%252f`): a backend that decodes twice would see a dot-segment
        /// or a separator the gateway never saw.
        case doubleEncoding
        /// A percent-encoded overlong or impossible UTF-8 sequence (`%C0%AE` is an overlong `.`).
        case overlongUTF8
        /// A `;` in the path while `request_hygiene.path_parameters` is `reject`.
        case pathParameter
    }

    public let code: Code
    /// A fixed, human-readable reason. It never echoes the target, so it is safe to log and to send back.
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
}

/// Normalizes an HTTP request-target before routing, so that the path the gateway matches routes against is the
/// path the backend will resolve.
///
/// Rules, applied in this order (the first failing rule decides the error):
///
/// 1. **Length.** A target longer than 8192 bytes is refused (`tooLong`).
/// 2. **Bytes.** The whole target, query included, must be printable ASCII: NUL is refused (`nul`); any other
///    control character (below 0x20, or 0x7F) and any byte of 0x80 or above are refused (`controlCharacter`;
///    request-targets are ASCII, RFC 3986 §2). A `#` anywhere is refused (`fragment`; a fragment is never sent,
///    RFC 9112 §3.2).
/// 3. **Form.** The target is origin-form, `/path?query` (RFC 9112 §3.2.1). Absolute-form,
///    `http://authority/path?query` or `https://…` (scheme case-insensitive), is accepted and reduced to its path and
///    query (RFC 9112 §3.2.2); an empty path becomes `/` (`http://example.com` → `/`). The authority must be
///    non-empty and contain no `@` (userinfo, RFC 9110 §4.2.4) and no `\`; it is discarded. Asterisk-form (`*`),
///    authority-form, the empty target and anything else not starting with `/` are refused (`notOriginForm`).
/// 4. **Query.** Everything after the first `?` is the query, kept byte-for-byte, not normalized (`%2F`, `..` and
///    `//` are fine there). Only rule 2 applies to it.
/// 5. **Percent-decoding of the path.** `%` must be followed by two hex digits (`%`, `%4`, `%zz` →
///    `invalidPercentEncoding`). `%2F` (either case) is refused (`encodedSlash`), `%5C` (either case) is refused
///    (`encodedBackslash`), `%00` is refused (`nul`). Encodings of unreserved characters (ALPHA, DIGIT, `-`, `.`,
///    `_`, `~`; RFC 3986 §2.3) are decoded (`%7Euser` → `~user`, `%2e` → `.`); every other encoding is kept, with its
///    hex digits upper-cased (`%c3%a9` → `%C3%A9`, `%20` stays `%20`). A raw `\` in the path is refused too
///    (`encodedBackslash`), so that no backend can take it for a separator.
/// 6. **Duplicate slashes** collapse: `//a///b` → `/a/b`.
/// 7. **Dot-segments** are removed (RFC 3986 §5.2.4) after rules 5 and 6, so `%2e%2e` is `..` and `/a//../b` is
///    `/b`. `..` above the root stays at the root (`/../a` → `/a`). A final `.` or `..` segment, like a final `/`,
///    leaves a trailing slash (`/a/b/..` → `/a/`, `/a/.` → `/a/`).
///
/// 8. **Path parameters.** A segment whose part before its first `;` is `.` or `..` is a dot-segment, parameters
///    and all (`/public/..;/api` → `/api`, as Tomcat, Jetty and Spring resolve it); with `.reject` any `;` is refused
///    (`pathParameter`). `%25` followed by the encoding of `.`, `/`, `\` or `%` is refused (`doubleEncoding`), and so
///    is an encoded overlong UTF-8 sequence (`%C0`, `%C1`, `%E0%80`-`%E0%9F`, `%F0%80`-`%F0%8F`; `overlongUTF8`). Other
///    non-UTF-8 escapes (Latin-1 `%E9`, `%FF`) pass: legacy backends use them.
///
/// Examples: `/public/../admin` → `/admin`; `/public/%2e%2e/admin` → `/admin`; `/public/..%2Fadmin` →
/// `encodedSlash`; `/a/./b//c/` → `/a/b/c/`; `/x?y=1/../z` → path `/x`, query `y=1/../z`;
/// `http://example.com:8080/a/../b?q` → path `/b`, query `q`.
///
/// Performance: one pass over the UTF-8 bytes to validate, one over the path to classify it, both eight bytes at a
/// time. A path with no `%`, no `\`, no `//` and no `/.` is already normal and is returned as is (for an
/// origin-form target without a query, the very same string: no copy, no allocation). Otherwise one more pass
/// decodes, collapses and removes dot-segments, writing straight into the new string's storage.
public enum PathNormalizer {
    /// The longest accepted request-target, in bytes.
    public static let maximumLength = 8192

    /// What to do with `;` path parameters (see rule 8).
    public enum ParameterHandling: Sendable {
        case normalize, reject
    }

    public static func normalize(_ target: String, parameters: ParameterHandling = .normalize) -> Result<NormalizedTarget, PathError> {
        if let result = target.utf8.withContiguousStorageIfAvailable({ normalize(bytes: $0, original: target, parameters: parameters) }) {
            return result
        }
        // Only a bridged, non-contiguous string gets here.
        return Array(target.utf8).withUnsafeBufferPointer { normalize(bytes: $0, original: target, parameters: parameters) }
    }

    // MARK: - Implementation

    private static func failure(_ code: PathError.Code) -> Result<NormalizedTarget, PathError> {
        let message: String
        switch code {
        case .notOriginForm: message = "request-target is not origin-form (/path?query) or absolute-form (http://host/path?query)"
        case .encodedSlash: message = "request path contains an encoded slash (%2F)"
        case .encodedBackslash: message = "request path contains a backslash or an encoded backslash (%5C)"
        case .nul: message = "request-target contains a NUL byte"
        case .controlCharacter: message = "request-target contains a control character or a non-ASCII byte"
        case .invalidPercentEncoding: message = "request path contains an invalid percent-encoding"
        case .fragment: message = "request-target contains a fragment (#)"
        case .tooLong: message = "request-target is longer than \(maximumLength) bytes"
        case .doubleEncoding: message = "request path contains a double percent-encoding (%25 of '.', '/', '\\' or '%')"
        case .overlongUTF8: message = "request path contains an overlong or invalid UTF-8 percent-encoding"
        case .pathParameter: message = "request path contains a ';' path parameter"
        }
        return .failure(PathError(code: code, message: message))
    }

    private static let slash: UInt8 = 0x2F  // /
    private static let dot: UInt8 = 0x2E  // .
    private static let percent: UInt8 = 0x25  // %
    private static let question: UInt8 = 0x3F  // ?
    private static let backslash: UInt8 = 0x5C  // \
    private static let hash: UInt8 = 0x23  // #
    private static let at: UInt8 = 0x40  // @
    private static let colon: UInt8 = 0x3A  // :
    private static let semicolon: UInt8 = 0x3B  // ;

    @inline(__always)
    private static func string(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static func normalize(bytes: UnsafeBufferPointer<UInt8>, original: String, parameters: ParameterHandling) -> Result<NormalizedTarget, PathError> {
        let count = bytes.count
        // 1. Length.
        if count > maximumLength { return failure(.tooLong) }
        // 2. Bytes.
        if let code = firstByteError(bytes) { return failure(code) }
        // 3. Form.
        guard count > 0 else { return failure(.notOriginForm) }
        let pathStart: Int
        let isOriginForm: Bool
        var authority: String?
        if bytes[0] == slash {
            pathStart = 0
            isOriginForm = true
        } else if let authorityStart = absoluteFormAuthorityStart(bytes) {
            var i = authorityStart
            while i < count {
                let byte = bytes[i]
                if byte == slash || byte == question { break }
                if byte == at || byte == backslash { return failure(.notOriginForm) }
                i += 1
            }
            if i == authorityStart { return failure(.notOriginForm) }
            authority = string(bytes, authorityStart..<i)
            pathStart = i
            isOriginForm = false
        } else {
            return failure(.notOriginForm)
        }

        // 4. Find the query and classify the path.
        let (pathEnd, needsWork) = scanPath(bytes, from: pathStart)
        let query: String? = pathEnd < count ? string(bytes, (pathEnd + 1)..<count) : nil

        if !needsWork {
            if pathStart == pathEnd { return .success(NormalizedTarget(path: "/", query: query, authority: authority)) }  // http://host?q
            if isOriginForm && query == nil { return .success(NormalizedTarget(path: original, query: nil)) }
            return .success(NormalizedTarget(path: string(bytes, pathStart..<pathEnd), query: query, authority: authority))
        }

        // 5-7. Decode, collapse and remove dot-segments in one pass.
        var error: PathError.Code?
        let path = String(unsafeUninitializedCapacity: pathEnd - pathStart) { output in
            switch normalizePath(UnsafeBufferPointer(rebasing: bytes[pathStart..<pathEnd]), into: output, parameters: parameters) {
            case .written(let written): return written
            case .failed(let code):
                error = code
                return 0
            }
        }
        if let error { return failure(error) }
        return .success(NormalizedTarget(path: path, query: query, authority: authority))
    }

    // MARK: Scanning, eight bytes at a time
    //
    // Both scans below read the target as little-endian UInt64 words and test all eight bytes at once with the
    // exact per-byte tests of "Bit Twiddling Hacks" (no carries cross byte lanes), falling back to a byte loop for
    // the tail and to find the exact byte once a word is flagged.

    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let low7: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
    private static let high: UInt64 = 0x8080_8080_8080_8080

    /// The high bit of every byte lane of `x` that is zero.
    @inline(__always)
    private static func zeroLanes(_ x: UInt64) -> UInt64 {
        ~(((x & low7) &+ low7) | x | low7)
    }

    /// The high bit of every byte lane of `x` equal to `byte`.
    @inline(__always)
    private static func lanes(_ x: UInt64, equalTo byte: UInt8) -> UInt64 {
        zeroLanes(x ^ (ones &* UInt64(byte)))
    }

    @inline(__always)
    private static func word(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> UInt64 {
        UInt64(littleEndian: UnsafeRawPointer(bytes.baseAddress! + offset).loadUnaligned(as: UInt64.self))
    }

    /// The error for the first byte that is NUL, another control character, non-ASCII or `#`; nil if none.
    private static func firstByteError(_ bytes: UnsafeBufferPointer<UInt8>) -> PathError.Code? {
        let count = bytes.count
        var i = 0
        while i + 8 <= count {
            let x = word(bytes, at: i)
            let atLeast7F = (((x & low7) &+ ones) | x) & high  // 0x7F...0xFF
            let below20 = ~((x & low7) &+ (ones &* 0x60)) & ~x & high  // 0x00...0x1F
            if atLeast7F | below20 | lanes(x, equalTo: hash) != 0 { break }
            i += 8
        }
        while i < count {
            let byte = bytes[i]
            if byte < 0x20 || byte >= 0x7F || byte == hash {
                if byte == 0 { return .nul }
                if byte == hash { return .fragment }
                return .controlCharacter
            }
            i += 1
        }
        return nil
    }

    /// Where the path ends (the first `?`, or the end), and whether the path holds `%`, `\`, `;`, `//` or `/.`.
    private static func scanPath(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (end: Int, needsWork: Bool) {
        let count = bytes.count
        var needsWork = false
        var i = start
        var slashCarry: UInt64 = 0  // 0x80 if the byte before this word is "/"
        while i + 8 <= count {
            let x = word(bytes, at: i)
            let slashes = lanes(x, equalTo: slash)
            let special = lanes(x, equalTo: percent) | lanes(x, equalTo: backslash) | lanes(x, equalTo: semicolon)
                | ((slashes << 8 | slashCarry) & (slashes | lanes(x, equalTo: dot)))
            let questions = lanes(x, equalTo: question)
            if questions != 0 {
                let bits = questions.trailingZeroBitCount &- 7  // the "?" lane starts at this bit
                let before: UInt64 = (1 << UInt64(bits)) &- 1
                return (i + bits / 8, needsWork || special & before != 0)
            }
            needsWork = needsWork || special != 0
            slashCarry = slashes >> 56
            i += 8
        }
        var previous: UInt8 = i > start ? bytes[i - 1] : 0
        while i < count {
            let byte = bytes[i]
            if byte == question { return (i, needsWork) }
            if byte == percent || byte == backslash || byte == semicolon || (previous == slash && (byte == slash || byte == dot)) {
                needsWork = true
            }
            previous = byte
            i += 1
        }
        return (count, needsWork)
    }

    /// The index after `http://` or `https://` (any case), or nil.
    private static func absoluteFormAuthorityStart(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        func lower(_ byte: UInt8) -> UInt8 { byte | 0x20 }  // ASCII case fold; exact for the letters compared below
        let count = bytes.count
        guard count >= 7, lower(bytes[0]) == 0x68, lower(bytes[1]) == 0x74, lower(bytes[2]) == 0x74, lower(bytes[3]) == 0x70
        else { return nil }  // "http"
        var i = 4
        if lower(bytes[4]) == 0x73 { i = 5 }  // "s"
        guard i + 3 <= count, bytes[i] == colon, bytes[i + 1] == slash, bytes[i + 2] == slash else { return nil }
        return i + 3
    }

    @inline(__always)
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte &- 0x30
        case 0x41...0x46: return byte &- 0x41 &+ 10
        case 0x61...0x66: return byte &- 0x61 &+ 10
        default: return nil
        }
    }

    @inline(__always)
    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E: return true
        default: return false
        }
    }

    @inline(__always)
    private static func upperHexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? 0x30 &+ value : 0x41 &+ (value &- 10)
    }

    /// Whether the normalized path holds `%25` followed by the hex of `.`, `/`, `\\` or `%` (after unreserved
    /// escapes were decoded, so `%25%32%65` counts too): decoded once more by a backend, it would be one of them.
    private static func containsDoubleEncoding(_ path: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i + 5 <= path.count {
            if path[i] == percent && path[i + 1] == 0x32 && path[i + 2] == 0x35, let high = hexValue(path[i + 3]), let low = hexValue(path[i + 4]) {
                let twice = high << 4 | low
                if twice == dot || twice == slash || twice == backslash || twice == percent { return true }
            }
            i += 1
        }
        return false
    }

    private enum PathOutcome {
        case written(Int)
        case failed(PathError.Code)
    }

    /// Writes the normalized form of `path` (which starts with `/`) into `output` and returns the number of bytes
    /// written. The output is never longer than the input: every input byte produces at most one output byte.
    ///
    /// `output` doubles as the segment stack: it always holds `/seg1/seg2/…/` followed by the segment being read.
    private static func normalizePath(
        _ path: UnsafeBufferPointer<UInt8>,
        into output: UnsafeMutableBufferPointer<UInt8>,
        parameters: ParameterHandling
    ) -> PathOutcome {
        let count = path.count
        output[0] = slash
        var written = 1
        var segmentStart = 1
        /// Where the current segment's first `;` was written (its parameters start there), if it has one.
        var parametersStart = -1
        var i = 1  // path[0] is "/"

        while true {
            let atEnd = i == count
            if atEnd || path[i] == slash {
                // A segment ends at output[segmentStart..<written]; its name (what decides whether it is a
                // dot-segment) ends at its first `;`.
                let length = (parametersStart >= 0 ? parametersStart : written) - segmentStart
                parametersStart = -1
                if length == 1 && output[segmentStart] == dot && written - segmentStart > 1 {
                    written = segmentStart  // ".;x" : a "." with parameters is still "."
                } else if length == 2 && output[segmentStart] == dot && output[segmentStart + 1] == dot && written - segmentStart > 2 {
                    written = segmentStart + 2  // "..;x" : handled as ".." below
                }
                let fullLength = written - segmentStart
                if fullLength == 1 && output[segmentStart] == dot {
                    written = segmentStart  // "." : drop it
                } else if fullLength == 2 && output[segmentStart] == dot && output[segmentStart + 1] == dot {
                    written = segmentStart  // ".." : drop it and the segment before, if any
                    if written > 1 {
                        written -= 1  // the "/" closing the previous segment
                        while output[written - 1] != slash { written -= 1 }
                    }
                } else if fullLength > 0 && !atEnd {
                    output[written] = slash  // a regular segment followed by "/"
                    written += 1
                }
                // fullLength == 0: an empty segment ("//" or the final "/") adds nothing.
                if atEnd {
                    return containsDoubleEncoding(UnsafeBufferPointer(rebasing: output[0..<written])) ? .failed(.doubleEncoding) : .written(written)
                }
                segmentStart = written
                i += 1
                continue
            }

            let byte = path[i]
            if byte == backslash { return .failed(.encodedBackslash) }
            if byte == semicolon {
                if parameters == .reject { return .failed(.pathParameter) }
                if parametersStart < 0 { parametersStart = written }
            }
            if byte != percent {
                output[written] = byte
                written += 1
                i += 1
                continue
            }
            guard i + 2 < count, let high = hexValue(path[i + 1]), let low = hexValue(path[i + 2]) else {
                return .failed(.invalidPercentEncoding)
            }
            let decoded = high << 4 | low
            switch decoded {
            case 0x00: return .failed(.nul)
            case 0xC0, 0xC1:
                return .failed(.overlongUTF8)  // never valid in UTF-8: C0 and C1 start overlong encodings of ASCII
            case 0xE0, 0xF0:
                // E0 80-9F and F0 80-8F are overlong three- and four-byte forms.
                if i + 5 < count, path[i + 3] == percent, let h = hexValue(path[i + 4]), let l = hexValue(path[i + 5]) {
                    let next = h << 4 | l
                    if next < (decoded == 0xE0 ? 0xA0 : 0x90) { return .failed(.overlongUTF8) }
                }
                output[written] = percent
                output[written + 1] = upperHexDigit(high)
                output[written + 2] = upperHexDigit(low)
                written += 3
            case slash: return .failed(.encodedSlash)
            case backslash: return .failed(.encodedBackslash)
            default:
                if isUnreserved(decoded) {
                    output[written] = decoded
                    written += 1
                } else {
                    output[written] = percent
                    output[written + 1] = upperHexDigit(high)
                    output[written + 2] = upperHexDigit(low)
                    written += 3
                }
            }
            i += 3
        }
    }
}
