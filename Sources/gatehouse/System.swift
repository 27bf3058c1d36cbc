#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser

/// Process environment as a dictionary (for `{env: NAME}` secrets).
enum Environment {
    static func variables() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}

/// Creating the data directory (owner-only).
enum Directories {
    static func create(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o700) != 0 && errno != EEXIST {
                throw ValidationError("cannot create directory \(current): \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// Finds a free TCP port by binding port 0 and reading what the kernel chose.
enum FreePort {
    static func find(host: String) throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ValidationError("cannot create a socket") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr(host == "localhost" ? "127.0.0.1" : host)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw ValidationError("cannot bind \(host): \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Flushes `print` output now (stdout is a pipe under tests and supervisors, which buffer otherwise).
func flushStandardOutput() {
    fflush(nil)
}

/// The bytes of a small file (a certificate, a key), or why it cannot be read (`strerror`), for options checked at
/// start.
func readSmallFile(_ path: String, limit: Int = 1 << 20) -> Result<[UInt8], ReadFileError> {
    guard let file = fopen(path, "rb") else { return .failure(ReadFileError(path: path, reason: String(cString: strerror(errno)))) }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while bytes.count <= limit {
        let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if count == 0 { break }
        bytes += chunk[0..<count]
    }
    if ferror(file) != 0 { return .failure(ReadFileError(path: path, reason: "read error")) }
    guard bytes.count <= limit else { return .failure(ReadFileError(path: path, reason: "larger than \(limit) bytes")) }
    return .success(bytes)
}

struct ReadFileError: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String { "\(path): \(reason)" }
}
