import GatehouseHTTPClient
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response read whole.
public struct SimpleHTTPResponse: Sendable {
    public init(status: Int, headers: HTTPHeaders, body: String) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public var status: Int
    public var headers: HTTPHeaders
    public var body: String
}

/// One HTTP/1.1 request (over TLS for https), read whole — kept for source compatibility of backends that used it.
/// It runs on Gatehouse's internal keep-alive client (one per event-loop group and trust setting), so sequential
/// calls to one server share a connection. Responses over 1 MiB are refused.
public enum SimpleHTTPClient {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String

        public init(description: String) {
            self.description = description
        }
    }

    /// Which certificates an `https://` server may present.
    public enum Trust: Sendable, Hashable {
        /// The system's trust store.
        case system
        /// Only certificates issued by the CA(s) in this PEM file (a private CA).
        case caFile(String)

        var clientTrust: HTTPClientTrust {
            switch self {
            case .system: .system
            case .caFile(let path): .caFile(path)
            }
        }
    }

    private struct ClientKey: Hashable {
        var group: ObjectIdentifier
        var trust: Trust
    }

    private static let clients = NIOLockedValueBox<[ClientKey: HTTPClient]>([:])

    /// The shared client of an event-loop group and trust setting.
    static func client(group: any EventLoopGroup, trust: Trust) -> HTTPClient {
        clients.withLockedValue { clients in
            let key = ClientKey(group: ObjectIdentifier(group), trust: trust)
            if let client = clients[key] { return client }
            let client = HTTPClient(group: group, configuration: .init(trust: trust.clientTrust))
            clients[key] = client
            return client
        }
    }

    /// `tls` nil: plain HTTP. Otherwise TLS 1.2+ with full certificate verification against `host`.
    public static func send(
        host: String, port: Int, method: HTTPMethod, path: String, headers: HTTPHeaders, body: String?, timeout: TimeAmount, group: any EventLoopGroup,
        tls: Trust? = nil
    ) async throws -> SimpleHTTPResponse {
        let request = HTTPClientRequest(
            origin: HTTPOrigin(host: host, port: port, isTLS: tls != nil), method: method, path: path, headers: headers, body: body.map { ByteBuffer(string: $0) }
        )
        return try await execute(request, timeout: timeout, group: group, trust: tls ?? .system)
    }

    private static func execute(_ request: HTTPClientRequest, timeout: TimeAmount, group: any EventLoopGroup, trust: Trust) async throws -> SimpleHTTPResponse {
        do {
            let response = try await client(group: group, trust: trust).execute(request, timeout: timeout)
            return SimpleHTTPResponse(status: response.status, headers: response.headers, body: response.text)
        } catch let error as HTTPClientError {
            throw Failure(description: error.message)
        }
    }
}

extension SimpleHTTPClient {
    /// A request to an absolute `http://` or `https://` URL; `trust` says which certificates an https server may
    /// present (default: the system's trust store).
    public static func send(
        url: String, method: HTTPMethod, headers: HTTPHeaders = [:], body: String? = nil, timeout: TimeAmount, group: any EventLoopGroup, trust: Trust = .system
    ) async throws -> SimpleHTTPResponse {
        let request: HTTPClientRequest
        do {
            request = try HTTPClientRequest(url: url, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        } catch let error as HTTPClientError {
            throw Failure(description: error.message)
        }
        return try await execute(request, timeout: timeout, group: group, trust: trust)
    }

    public static func get(url: String, timeout: TimeAmount, group: any EventLoopGroup, trust: Trust = .system) async throws -> SimpleHTTPResponse {
        try await send(url: url, method: .GET, timeout: timeout, group: group, trust: trust)
    }

    /// `max-age` of a `Cache-Control` value, in seconds.
    public static func maxAge(_ cacheControl: String?) -> Double? {
        HTTPClientResponse.maxAge(cacheControl)
    }
}
