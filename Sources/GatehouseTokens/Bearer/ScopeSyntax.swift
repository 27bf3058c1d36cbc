/// The scope grammar of RFC 6749 §3.3: `scope = scope-token *( SP scope-token )`,
/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`. Shared by both configurations (validated at load), the
/// authorization server's `scope` parameters and the administration commands.
public enum ScopeSyntax {
    /// Whether `token` is one scope-token.
    public static func isValidToken(_ token: some StringProtocol) -> Bool {
        !token.isEmpty && token.utf8.allSatisfy { $0 == 0x21 || (0x23...0x5B).contains($0) || (0x5D...0x7E).contains($0) }
    }

    /// Splits a space-delimited scope parameter (duplicates dropped, first occurrence kept); `nil` when it is malformed.
    public static func parse(_ value: String) -> [String]? {
        let tokens = value.split(separator: " ", omittingEmptySubsequences: false)
        guard tokens.allSatisfy({ isValidToken($0) }) else { return nil }
        var seen = Set<String>()
        return tokens.map(String.init).filter { seen.insert($0).inserted }
    }
}
