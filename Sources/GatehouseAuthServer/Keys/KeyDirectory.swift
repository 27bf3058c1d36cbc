import Foundation
import GatehouseTokens

/// Signing keys on disk: one JSON file per key in a directory only the owner can read (0700), each file 0600,
/// written to a temporary name, fsynced and renamed, so a crash never leaves half a key.
public struct KeyDirectory: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    struct KeyFile: Codable {
        var kid: String
        var alg: SigningAlgorithm
        var created_at: Int
        var activates_at: Int
        var private_key_pem: String
    }

    /// Reads every key file. Unreadable or invalid files are reported, not silently skipped.
    public func load() throws -> [ManagedKey] {
        try ensureDirectory()
        let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".json") }
        return try names.sorted().map { name in
            let file = path + "/" + name
            guard let data = FileManager.default.contents(atPath: file) else { throw JOSEError(.invalidKey, "cannot read \(file)") }
            let decoded: KeyFile
            do {
                decoded = try JSONDecoder().decode(KeyFile.self, from: data)
            } catch {
                throw JOSEError(.invalidKey, "\(file) is not a key file: \(error)")
            }
            let key = try SigningKey(algorithm: decoded.alg, privateKeyPEM: decoded.private_key_pem)
            guard key.kid == decoded.kid else { throw JOSEError(.invalidKey, "\(file): kid does not match the key") }
            return ManagedKey(key: key, createdAt: decoded.created_at, activatesAt: decoded.activates_at)
        }
    }

    /// Writes a key atomically with owner-only permissions.
    public func save(_ key: ManagedKey) throws {
        try ensureDirectory()
        let file = KeyFile(kid: key.key.kid, alg: key.key.algorithm, created_at: key.createdAt, activates_at: key.activatesAt, private_key_pem: key.key.privateKeyPEM)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(file)
        let final = path + "/" + key.key.kid + ".json"
        let temporary = final + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw JOSEError(.invalidKey, "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor)
        close(descriptor)
        guard written == data.count, synced == 0, rename(temporary, final) == 0 else {
            unlink(temporary)
            throw JOSEError(.invalidKey, "cannot write \(final)")
        }
        // The rename is durable only once the directory is: a key must survive a crash before it signs anything,
        // since a self-contained JWT (which has no row) is verifiable only while its key exists. One fsync per key
        // created (rotations are hours apart).
        let directoryDescriptor = open(path, O_RDONLY | O_DIRECTORY)
        guard directoryDescriptor >= 0 else { throw JOSEError(.invalidKey, "cannot open \(path) to sync it") }
        let directorySynced = fsync(directoryDescriptor) == 0 ? 0 : errno
        close(directoryDescriptor)
        guard directorySynced == 0 else { throw JOSEError(.invalidKey, "cannot sync \(path): \(String(cString: strerror(directorySynced)))") }
    }

    /// Runs `body` holding the directory's creation lock: an exclusive `flock` on `.rotation.lock` in the key
    /// directory, held by one process at a time on every host that mounts it (Linux implements `flock` on NFS with
    /// the server's byte-range locks). Replicas sharing the directory take it before they decide that a key is due
    /// and create it, so two of them never both create a key for one rotation. Blocking: call it off the event loop.
    public func withCreationLock<T>(_ body: () throws -> T) throws -> T {
        try ensureDirectory()
        let file = path + "/.rotation.lock"
        let descriptor = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw JOSEError(.invalidKey, "cannot open \(file): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }  // closing releases the lock too
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw JOSEError(.invalidKey, "cannot lock \(file): \(String(cString: strerror(errno)))") }
        }
        defer { flock(descriptor, LOCK_UN) }
        return try body()
    }

    public func delete(kid: String) {
        unlink(path + "/" + kid + ".json")
    }

    private func ensureDirectory() throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw JOSEError(.invalidKey, "\(path) is not a directory") }
            chmod(path, 0o700)
            return
        }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }
}
