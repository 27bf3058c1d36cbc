#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads small files (configuration, secrets) without Foundation. Used at start-up only, never on an event loop.
enum FileReading {
    static func read(_ path: String) -> String? {
        guard let handle = fopen(path, "rb") else { return nil }
        defer { fclose(handle) }
        var bytes = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, handle)
            if count > 0 { bytes.append(contentsOf: chunk[0..<count]) }
            if count < chunk.count { break }
            if bytes.count > 16 << 20 { return nil }  // no configuration file is that large
        }
        if ferror(handle) != 0 { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
