import Yams

/// Reading a configuration file: the text and the directory relative paths in it are resolved against, or a
/// `ConfigurationError` naming the file.
enum ConfigurationFile {
    static func read(_ file: String) throws -> (text: String, directory: String) {
        guard let text = FileReading.read(file) else {
            throw ConfigurationError(code: .unreadableFile, file: file, keyPath: "", reason: "cannot read the file")
        }
        let directory = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : "."
        return (text, directory)
    }

    /// The root mapping of a YAML document.
    static func root(yaml: String, file: String) throws -> YAMLMappingReader {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(code: .invalidYAML, file: file, keyPath: "", reason: "not valid YAML: \(error)")
        }
        return try YAMLMappingReader(node: node, file: file, path: "")
    }
}

/// Reads one YAML mapping while remembering which keys were consumed, so that whatever is left over
/// can be refused as an unknown key (a typo must never be silently ignored).
struct YAMLMappingReader {
    let file: String
    let path: String
    private let entries: [(key: String, value: Node)]
    private var consumed: Set<String> = []

    init(node: Node?, file: String, path: String) throws {
        self.file = file
        self.path = path
        guard let node else {
            self.entries = []
            return
        }
        guard case .mapping(let mapping) = node else {
            throw ConfigurationError(code: .invalidValue, file: file, keyPath: path, reason: "expected a mapping of keys to values")
        }
        var entries: [(key: String, value: Node)] = []
        var seen = Set<String>()
        for (key, value) in mapping {
            guard let name = key.string else {
                throw ConfigurationError(code: .invalidValue, file: file, keyPath: path, reason: "keys must be strings")
            }
            guard seen.insert(name).inserted else {
                throw ConfigurationError(code: .invalidValue, file: file, keyPath: Self.join(path, name), reason: "key appears twice")
            }
            entries.append((name, value))
        }
        self.entries = entries
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func keyPath(_ key: String) -> String { Self.join(path, key) }

    func error(_ key: String, _ reason: String, code: ConfigurationError.Code = .invalidValue) -> ConfigurationError {
        ConfigurationError(code: code, file: file, keyPath: keyPath(key), reason: reason)
    }

    mutating func node(_ key: String) -> Node? {
        consumed.insert(key)
        guard let value = entries.first(where: { $0.key == key })?.value else { return nil }
        if case .scalar(let scalar) = value, scalar.string == "~" || (scalar.string.isEmpty && scalar.style == .plain) {
            return nil  // explicit null reads as absent
        }
        return value
    }

    mutating func mapping(_ key: String) throws -> YAMLMappingReader {
        try YAMLMappingReader(node: node(key), file: file, path: keyPath(key))
    }

    mutating func string(_ key: String) throws -> String? {
        guard let value = node(key) else { return nil }
        guard case .scalar(let scalar) = value else { throw error(key, "expected a string") }
        return scalar.string
    }

    mutating func requiredString(_ key: String) throws -> String {
        guard let value = try string(key), !value.isEmpty else { throw error(key, "is required", code: .missingKey) }
        return value
    }

    mutating func int(_ key: String, range: ClosedRange<Int>) throws -> Int? {
        guard let text = try string(key) else { return nil }
        guard let value = Int(text) else { throw error(key, "expected a whole number, got '\(text)'") }
        guard range.contains(value) else { throw error(key, "must be between \(range.lowerBound) and \(range.upperBound), got \(value)") }
        return value
    }

    mutating func bool(_ key: String) throws -> Bool? {
        guard let text = try string(key) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(key, "expected true or false, got '\(text)'")
        }
    }

    /// A duration in seconds: a whole number, or a number followed by `s`, `m`, `h` or `d`.
    mutating func duration(_ key: String, minimum: Int = 0) throws -> Int? {
        guard let text = try string(key) else { return nil }
        guard let seconds = Self.parseDuration(text) else {
            throw error(key, "expected a duration such as 30s, 15m, 1h or 14d, got '\(text)'")
        }
        guard seconds >= minimum else { throw error(key, "must be at least \(minimum) seconds") }
        return seconds
    }

    static func parseDuration(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: " ")
        guard let last = trimmed.last else { return nil }
        let multipliers: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let multiplier = multipliers[last] {
            guard let number = Int(trimmed.dropLast()), number >= 0 else { return nil }
            let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : product
        }
        guard let number = Int(trimmed), number >= 0 else { return nil }
        return number
    }

    /// A duration in milliseconds: a whole number followed by `ms`, `s`, `m` or `h` (`250ms`, `2s`, `1m`, `1h`),
    /// or a bare whole number, which means milliseconds (unlike `duration`, where it means seconds).
    mutating func milliseconds(_ key: String, minimum: Int = 0) throws -> Int? {
        guard let text = try string(key) else { return nil }
        guard let milliseconds = Self.parseMilliseconds(text) else {
            throw error(key, "expected a duration such as 250ms, 2s, 1m or 1h (a bare number means milliseconds), got '\(text)'")
        }
        guard milliseconds >= minimum else { throw error(key, "must be at least \(minimum)ms") }
        return milliseconds
    }

    static func parseMilliseconds(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: " ")
        // `ms` is tried first, since it also ends in `s`.
        let units: [(suffix: String, multiplier: Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        var digits = Substring(trimmed)
        var multiplier = 1
        if let unit = units.first(where: { trimmed.hasSuffix($0.suffix) }) {
            digits = digits.dropLast(unit.suffix.count)
            multiplier = unit.multiplier
        }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let number = Int(digits)
        else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    mutating func stringList(_ key: String) throws -> [String]? {
        guard let value = node(key) else { return nil }
        guard case .sequence(let sequence) = value else { throw error(key, "expected a list") }
        return try sequence.enumerated().map { index, item in
            guard case .scalar(let scalar) = item, !scalar.string.isEmpty else {
                throw ConfigurationError(code: .invalidValue, file: file, keyPath: "\(keyPath(key))[\(index)]", reason: "expected a non-empty string")
            }
            return scalar.string
        }
    }

    mutating func list(_ key: String) throws -> [YAMLMappingReader]? {
        guard let value = node(key) else { return nil }
        guard case .sequence(let sequence) = value else { throw error(key, "expected a list") }
        return try sequence.enumerated().map { index, item in
            try YAMLMappingReader(node: item, file: file, path: "\(keyPath(key))[\(index)]")
        }
    }

    /// A secret given inline, as `{env: NAME}` or as `{file: PATH}`.
    mutating func secret(_ key: String, environment: [String: String], baseDirectory: String) throws -> String? {
        guard let value = node(key) else { return nil }
        switch value {
        case .scalar(let scalar):
            guard !scalar.string.isEmpty else { throw error(key, "is empty", code: .missingSecret) }
            return scalar.string
        case .mapping:
            var source = try YAMLMappingReader(node: value, file: file, path: keyPath(key))
            let env = try source.string("env")
            let path = try source.string("file")
            try source.finish()
            switch (env, path) {
            case (let name?, nil):
                guard let secret = environment[name], !secret.isEmpty else {
                    throw error(key, "environment variable \(name) is not set", code: .missingSecret)
                }
                return secret
            case (nil, let path?):
                let resolved = path.hasPrefix("/") ? path : "\(baseDirectory)/\(path)"
                guard let contents = FileReading.read(resolved) else {
                    throw error(key, "cannot read secret file \(resolved)", code: .missingSecret)
                }
                let secret = contents.trimmingCharacters(in: "\n\r ")
                guard !secret.isEmpty else { throw error(key, "secret file \(resolved) is empty", code: .missingSecret) }
                return secret
            default:
                throw error(key, "give exactly one of env or file")
            }
        default:
            throw error(key, "expected a string or {env: NAME} or {file: PATH}")
        }
    }

    /// Refuses any key that was not read.
    func finish() throws {
        for entry in entries where !consumed.contains(entry.key) {
            let known = consumed.sorted().joined(separator: ", ")
            throw ConfigurationError(
                code: .unknownKey, file: file, keyPath: keyPath(entry.key),
                reason: "unknown key (known keys here: \(known))"
            )
        }
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        var view = Substring(self)
        while let first = view.first, characters.contains(first) { view = view.dropFirst() }
        while let last = view.last, characters.contains(last) { view = view.dropLast() }
        return String(view)
    }
}
