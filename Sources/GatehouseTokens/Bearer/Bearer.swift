/// Bearer credentials in a request (RFC 6750 §2.1), parsed strictly.
public enum BearerToken {
    /// Why a request's credentials were not usable.
    public enum Problem: Error, Equatable, Sendable {
        /// No `Authorization` header, or another scheme: answer 401 with a bare challenge (RFC 6750 §3.1).
        case missing
        /// Several `Authorization` headers, or a malformed bearer value: 400 `invalid_request`.
        case malformed(String)
    }

    /// The token from the request's `Authorization` header values.
    public static func extract(authorizationValues: [String]) -> Result<String, Problem> {
        extract(first: authorizationValues.first, count: authorizationValues.count)
    }

    /// The same from the first `Authorization` value and the number of them (no array on the data path).
    public static func extract(first value: String?, count: Int) -> Result<String, Problem> {
        guard let value else { return .failure(.missing) }
        guard count == 1 else { return .failure(.malformed("more than one Authorization header")) }
        let utf8 = value.utf8
        var index = utf8.startIndex
        for expected in "bearer ".utf8 {
            guard index != utf8.endIndex else { return .failure(.missing) }
            let byte = utf8[index]
            // The scheme is case-insensitive; the space is not a letter, so it is compared as is.
            guard (expected == UInt8(ascii: " ") ? byte : byte | 0x20) == expected else { return .failure(.missing) }  // another scheme
            utf8.formIndex(after: &index)
        }
        guard index != utf8.endIndex else { return .failure(.missing) }  // "Bearer " and nothing else
        while index != utf8.endIndex && utf8[index] == UInt8(ascii: " ") { utf8.formIndex(after: &index) }
        let token = String(Substring(utf8[index...]))
        var bytes = token
        guard bytes.withUTF8({ isB64Token($0) }) else { return .failure(.malformed("the bearer token is not a b64token (RFC 6750 §2.1)")) }
        return .success(token)
    }

    /// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`, at most 8 KiB.
    static func isB64Token(_ token: some Collection<UInt8>) -> Bool {
        guard !token.isEmpty, token.count <= 8192 else { return false }
        var sawPadding = false
        var body = 0
        for byte in token {
            switch byte {
            case UInt8(ascii: "="):
                sawPadding = true
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                if sawPadding { return false }
                body += 1
            default:
                return false
            }
        }
        return body > 0
    }

    /// Whether a token looks like a compact JWS (three base64url segments): the `any` mode verifies those locally
    /// and exchanges everything else.
    public static func isJWTShaped(_ token: String) -> Bool {
        var token = token
        return token.withUTF8 { bytes in
            var dots = 0
            var segmentLength = 0
            for byte in bytes {
                if byte == UInt8(ascii: ".") {
                    guard segmentLength > 0 || dots == 2 else { return false }
                    dots += 1
                    segmentLength = 0
                    continue
                }
                let urlSafe = (65...90).contains(byte) || (97...122).contains(byte) || (48...57).contains(byte) || byte == 45 || byte == 95
                guard urlSafe else { return false }
                segmentLength += 1
            }
            // An empty third segment (`alg: none`) still counts: it is refused by the verifier, not sent for exchange.
            return dots == 2
        }
    }
}

/// A `WWW-Authenticate: Bearer …` challenge (RFC 6750 §3).
public struct BearerChallenge: Error, Equatable, Sendable {
    public enum ErrorCode: String, Sendable {
        case invalidRequest = "invalid_request"
        case invalidToken = "invalid_token"
        case insufficientScope = "insufficient_scope"
    }

    public var realm: String
    public var error: ErrorCode?
    public var description: String?
    /// The scope needed (insufficient_scope).
    public var scope: String?

    public init(realm: String, error: ErrorCode? = nil, description: String? = nil, scope: String? = nil) {
        self.realm = realm
        self.error = error
        self.description = description
        self.scope = scope
    }

    /// HTTP status that goes with it: 401, 400 (invalid_request) or 403 (insufficient_scope).
    public var status: Int {
        switch error {
        case .invalidRequest: 400
        case .insufficientScope: 403
        case .invalidToken, nil: 401
        }
    }

    /// The header value. Quoted strings escape `"` and `\` (RFC 9110 §5.6.4); descriptions keep to the printable
    /// ASCII RFC 6750 allows.
    public var headerValue: String {
        var value = "Bearer realm=\"\(Self.quoted(realm))\""
        if let error { value += ", error=\"\(error.rawValue)\"" }
        if let description { value += ", error_description=\"\(Self.quoted(Self.printable(description)))\"" }
        if let scope { value += ", scope=\"\(Self.quoted(scope))\"" }
        return value
    }

    static func quoted(_ text: String) -> String {
        var output = ""
        for character in text {
            if character == "\"" || character == "\\" { output.append("\\") }
            output.append(character)
        }
        return output
    }

    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value <= 0x7E }))
    }
}

/// The scopes a route requires.
public struct ScopeRequirement: Equatable, Sendable {
    public var allOf: Set<String>
    public var anyOf: Set<String>

    public init(allOf: Set<String> = [], anyOf: Set<String> = []) {
        self.allOf = allOf
        self.anyOf = anyOf
    }

    /// Which part of a requirement a set of scopes does not meet.
    public enum Unmet: Sendable {
        /// Some scope of `allOf` is missing (checked first).
        case allOf
        /// None of `anyOf` is there.
        case anyOf
    }

    /// Nil when `granted` satisfies the requirement, else the part it fails. Allocates nothing (the gateway answers
    /// with a challenge it built for each part at load).
    public func unmet(by granted: Set<String>) -> Unmet? {
        if !allOf.isSubset(of: granted) { return .allOf }
        if !anyOf.isEmpty && anyOf.isDisjoint(with: granted) { return .anyOf }
        return nil
    }

    /// The scope value a challenge names for an unmet part: its scopes, sorted, space-separated.
    public func challengeScope(_ unmet: Unmet) -> String {
        (unmet == .allOf ? allOf : anyOf).sorted().joined(separator: " ")
    }

    /// Nil when `granted` satisfies the requirement, else the scope value to put in the challenge.
    public func missing(from granted: Set<String>) -> String? {
        unmet(by: granted).map(challengeScope)
    }
}
