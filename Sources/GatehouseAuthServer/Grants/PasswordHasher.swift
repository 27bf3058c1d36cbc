import HummingbirdBcrypt
import NIOPosix

/// bcrypt, always on the thread pool: hashing takes tens of milliseconds and must never run on an event loop.
struct PasswordHasher: Sendable {
    let cost: Int
    let threadPool: NIOThreadPool

    init(cost: Int, threadPool: NIOThreadPool = .singleton) {
        self.cost = cost
        self.threadPool = threadPool
    }

    /// A hash that matches no password, verified against when the user does not exist so that timing does
    /// not reveal which usernames are registered.
    static let decoyHash = Bcrypt.hash("gatehouse decoy password", cost: 10)

    func hash(_ password: String) async throws -> String {
        let cost = UInt8(clamping: cost)
        return try await threadPool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        try await threadPool.runIfActive { Bcrypt.verify(password, hash: hash) }
    }
}
