/// A configuration file that cannot be used, naming the file, the key and why.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The kind of problem, for callers and tests that branch on it.
    public enum Code: String, Sendable {
        case unreadableFile
        case invalidYAML
        case unknownKey
        case missingKey
        case invalidValue
        case missingSecret
    }

    /// What went wrong.
    public let code: Code
    /// The file the value came from (or `<string>` when parsed from memory).
    public let file: String
    /// The dotted path of the key, e.g. `clients[1].redirect_uris[0]`.
    public let keyPath: String
    /// Why the value was refused.
    public let reason: String

    public init(code: Code, file: String, keyPath: String, reason: String) {
        self.code = code
        self.file = file
        self.keyPath = keyPath
        self.reason = reason
    }

    public var description: String {
        keyPath.isEmpty ? "\(file): \(reason)" : "\(file): \(keyPath): \(reason)"
    }
}
