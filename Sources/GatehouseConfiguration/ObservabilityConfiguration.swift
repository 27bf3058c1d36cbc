/// `access_log:` of either server: one JSON line per request. Absent (the default): no access log.
public struct AccessLogSettings: Sendable, Equatable {
    /// `stdout`, or a file (relative names are read from the configuration file's directory). The file is opened
    /// for appending (created 0640) and reopened on SIGUSR1, after a log rotation moved it away.
    public var path: String

    public init(path: String) {
        self.path = path
    }

    /// Whether the lines go to standard output.
    public var isStandardOutput: Bool { path == "stdout" }
}

extension YAMLMappingReader {
    /// `access_log: {path}` (nil when absent).
    mutating func accessLog(baseDirectory: String) throws -> AccessLogSettings? {
        guard node("access_log") != nil else { return nil }
        var reader = try mapping("access_log")
        let path = try reader.requiredString("path")
        try reader.finish()
        return AccessLogSettings(path: path == "stdout" ? path : (path.hasPrefix("/") ? path : baseDirectory + "/" + path))
    }

    /// `admin: {host, port}` (nil when absent), with `defaultPort` when the port is left out.
    mutating func adminListener(defaultPort: Int) throws -> GatewayConfiguration.Admin? {
        guard node("admin") != nil else { return nil }
        var reader = try mapping("admin")
        var value = GatewayConfiguration.Admin(port: defaultPort)
        if let host = try reader.hostString("host") { value.host = host }
        if let port = try reader.int("port", range: 0...65535) { value.port = port }
        try reader.finish()
        return value
    }
}
