import GatehouseTokens
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Gives every request an id (the caller's `X-Request-Id` when well-formed, else a new one), returns it on
/// every response, turns any error that escapes a handler into a JSON body carrying it, and writes one access-log
/// line: method, path without the query (which can carry codes), status, duration. Never headers or bodies.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = AuthRequestContext
    let logger: Logger

    func handle(_ request: Request, context: AuthRequestContext, next: (Request, AuthRequestContext) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        let id = request.headers[.requestID].flatMap { Self.isAcceptable($0) ? $0 : nil } ?? Self.generate()
        context.requestID = id
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            let message = error.status == .notFound ? "no such endpoint" : error.status.reasonPhrase
            response = Responses.httpError(status: error.status, message: message, requestID: id)
        } catch {
            logger.error("unhandled error", metadata: ["request_id": "\(id)", "error": "\(error)"])
            response = Responses.httpError(status: .internalServerError, message: "internal error", requestID: id)
        }
        response.headers[.requestID] = id
        if logger.logLevel <= .info {
            let elapsed = ContinuousClock.now - start
            let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
            logger.info(
                "request",
                metadata: [
                    "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
                    "duration_us": "\(micros)", "remote": "\(context.remoteAddress)", "request_id": "\(id)",
                ]
            )
        }
        return response
    }

    static func isAcceptable(_ id: String) -> Bool {
        (1...128).contains(id.utf8.count)
            && id.utf8.allSatisfy { byte in
                (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == 45 || byte == 46 || byte == 95
            }
    }

    /// A process-random 64-bit prefix and a counter: unique, unguessable enough for correlation, and no
    /// syscall per request (request ids are not credentials).
    static func generate() -> String {
        let sequence = counter.withLockedValue { value -> UInt64 in
            value &+= 1
            return value
        }
        var bytes = prefix
        for index in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: sequence >> (56 - 8 * index))) }
        return Base64URL.encode(bytes)
    }

    private static let prefix: [UInt8] = Array(Base64URL.decode(SecureToken.generate())!.prefix(8))
    private static let counter = NIOLockedValueBox<UInt64>(0)
}
