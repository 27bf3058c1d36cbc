import ArgumentParser
import GatehouseAuthServer
import GatehouseConfiguration
import GatehouseStore
import GatehouseTokens
import HummingbirdBcrypt
import Logging
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the admin verbs find the store.
struct StoreOptions: ParsableArguments {
    @Option(help: "The data directory of the authorization server.")
    var dataDir: String = "gatehouse-data"

    @Option(help: "The database file inside the data directory.")
    var databaseFile: String = "auth.sqlite"

    @Option(help: "An authorization server configuration: its storage section is used (e.g. the shared PostgreSQL database) instead of --data-dir and --database-file.")
    var config: String?

    func open() async throws -> any AuthStore {
        var logger = Logger(label: "gatehouse-admin")
        logger.logLevel = .warning
        if let config {
            let configuration = try loadConfiguration(config)
            return try await StoreOpening.open(configuration.storage, dataDirectory: configuration.dataDirectory ?? dataDir, logger: logger)
        }
        try Directories.create(dataDir)
        return try await SQLiteAuthStore.open(.init(path: dataDir + "/" + databaseFile), logger: logger)
    }
}

/// Runs `body` with the store open and always closes it.
func withStore<T>(_ options: StoreOptions, _ body: (any AuthStore) async throws -> T) async throws -> T {
    let store = try await options.open()
    do {
        let result = try await body(store)
        try await store.close()
        return result
    } catch {
        try? await store.close()
        throw error
    }
}

/// `gatehouse clients add|list|remove`.
struct ClientsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "clients", abstract: "Manage OAuth clients.", subcommands: [Add.self, List.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a client. A confidential client's secret is generated and printed once.")

        @OptionGroup var store: StoreOptions
        @Option(help: "Client id.") var id: String
        @Option(help: "Display name shown on the consent page.") var name: String?
        @Flag(help: "A public client (no secret; PKCE required).") var `public` = false
        @Option(name: .customLong("grant"), help: "A grant (repeatable): authorization_code, implicit, password, client_credentials, refresh_token.")
        var grants: [String] = []
        @Option(name: .customLong("scope"), help: "An allowed scope (repeatable).") var scopes: [String] = []
        @Option(name: .customLong("default-scope"), help: "A scope granted when a request names none (repeatable; one of the --scope values). Without any, a request without scope is refused.")
        var defaultScopes: [String] = []
        @Option(help: "Access tokens from the token endpoint: opaque or jwt (RFC 9068).") var accessTokenFormat: String = "opaque"
        @Option(name: .customLong("redirect-uri"), help: "A redirect URI (repeatable).") var redirectURIs: [String] = []

        func validate() throws {
            guard !id.isEmpty, id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
                throw ValidationError("--id must be visible ASCII without ':'")
            }
            guard !grants.isEmpty else { throw ValidationError("give at least one --grant") }
            for grant in grants {
                guard let value = GrantType(rawValue: grant) else { throw ValidationError("unknown grant '\(grant)'") }
                if `public` && (value == .password || value == .clientCredentials) {
                    throw ValidationError("a public client cannot use \(grant)")
                }
            }
            for scope in scopes where !ScopeSyntax.isValidToken(scope) { throw ValidationError("'\(scope)' is not a valid scope") }
            for scope in defaultScopes where !scopes.contains(scope) { throw ValidationError("--default-scope '\(scope)' is not one of the --scope values") }
            guard AccessTokenFormat(rawValue: accessTokenFormat) != nil else { throw ValidationError("--access-token-format must be opaque or jwt") }
            for uri in redirectURIs {
                guard let url = ParsedURL(uri), url.fragment == nil, url.scheme == "https" || url.isLoopback else {
                    throw ValidationError("'\(uri)' is not an https (or loopback http) URL without a fragment")
                }
            }
            if (grants.contains("authorization_code") || grants.contains("implicit")) && redirectURIs.isEmpty {
                throw ValidationError("authorization_code and implicit need at least one --redirect-uri")
            }
        }

        func run() async throws {
            let secret: String? = `public` ? nil : SecureToken.generate()
            let record = ClientRecord(
                id: id, name: name ?? id, type: `public` ? "public" : "confidential", secretHash: secret.map(SecureToken.hash),
                grants: grants, scopes: scopes, redirectURIs: redirectURIs, fromConfiguration: false, defaultScopes: defaultScopes,
                accessTokenFormat: accessTokenFormat
            )
            try await withStore(store) { store in
                guard try await store.client(id: id) == nil else { throw ValidationError("client '\(id)' already exists") }
                try await store.upsertClient(record)
            }
            print("client \(id) registered")
            if let secret {
                print("client_secret: \(secret)")
                print("(shown once: only its hash is stored)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List clients.")
        @OptionGroup var store: StoreOptions

        func run() async throws {
            let clients = try await withStore(store) { try await $0.listClients() }
            for client in clients {
                print("\(client.id)\t\(client.type)\tgrants=\(client.grants.joined(separator: ","))\tscopes=\(client.scopes.joined(separator: ","))\tdefault_scopes=\(client.defaultScopes.joined(separator: ","))\tredirect_uris=\(client.redirectURIs.joined(separator: ","))\(client.fromConfiguration ? "\t(from configuration)" : "")")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a client and revoke its tokens.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Client id.") var id: String

        func run() async throws {
            guard try await withStore(store, { try await $0.removeClient(id: id) }) else { throw ValidationError("no client '\(id)'") }
            print("client \(id) removed; its tokens are revoked")
        }
    }
}

/// `gatehouse users add|remove`.
struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "users", abstract: "Manage users.", subcommands: [Add.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user (or set their password). The password is prompted for, or read from stdin.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Username.") var username: String
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @Option(help: "bcrypt cost.") var bcryptCost: Int = 10

        func run() async throws {
            guard !username.isEmpty else { throw ValidationError("username is empty") }
            guard (4...31).contains(bcryptCost) else { throw ValidationError("--bcrypt-cost must be 4...31") }
            let password: String
            if passwordStdin || isatty(0) == 0 {
                guard let line = readLine(strippingNewline: true), !line.isEmpty else { throw ValidationError("no password on standard input") }
                password = line
            } else {
                guard let typed = getpass("Password for \(username): "), let first = Optional(String(cString: typed)), !first.isEmpty else {
                    throw ValidationError("no password given")
                }
                guard let again = getpass("Again: "), String(cString: again) == first else { throw ValidationError("the passwords differ") }
                password = first
            }
            let cost = UInt8(bcryptCost)
            let hash = try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
            try await withStore(store) { store in
                let existing = try await store.user(username: username)
                try await store.upsertUser(UserRecord(id: existing?.id ?? UserRecord.newID(), username: username, passwordHash: hash))
            }
            print("user \(username) saved")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user and revoke their tokens.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Username.") var username: String

        func run() async throws {
            guard try await withStore(store, { try await $0.removeUser(username: username) }) else { throw ValidationError("no user '\(username)'") }
            print("user \(username) removed; their tokens are revoked")
        }
    }
}
