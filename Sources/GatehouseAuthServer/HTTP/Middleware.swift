import GatehouseObservability
import GatehouseStore
import GatehouseTokens
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Gives every request an id (the caller's `X-Request-Id` when well-formed, else a new one), returns it on
/// every response, turns any error that escapes a handler into a JSON body carrying it, and writes one access-log
/// line: method, path without the query (which can carry codes), status, duration. Never headers or bodies.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = AuthRequestContext
    let logger: Logger
    let metrics: AuthMetrics
    let accessLog: AccessLogWriter?

    func handle(_ request: Request, context: AuthRequestContext, next: (Request, AuthRequestContext) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        let id = Self.resolve(request.headers[.requestID])
        context.requestID = id
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            let message = error.status == .notFound ? "no such endpoint" : error.status.reasonPhrase
            response = Responses.httpError(status: error.status, message: message, requestID: id)
        } catch let error as StoreError where error.code == .unavailable {
            // The database is down or restarting (a page, the consent form): 503 with Retry-After, not a 500.
            logger.warning("store unavailable", metadata: ["request_id": "\(id)", "error": "\(error)"])
            response = Responses.httpError(status: .serviceUnavailable, message: "temporarily unavailable; retry later", requestID: id)
            response.headers[.retryAfter] = String(OAuthError.storeUnavailableRetryAfter)
        } catch {
            logger.error("unhandled error", metadata: ["request_id": "\(id)", "error": "\(error)"])
            response = Responses.httpError(status: .internalServerError, message: "internal error", requestID: id)
        }
        response.headers[.requestID] = id
        // The tracing middleware runs outside this one: its span is still open here (see `makeRouter`).
        let span = ActiveSpan.current
        span?.attributes["gatehouse.request_id"] = id
        let endpoint = AuthMetrics.Endpoint(path: request.uri.path)
        let nanoseconds = (ContinuousClock.now - start).nanoseconds
        metrics.request(endpoint, status: response.status.code, nanoseconds: nanoseconds)
        if let accessLog {
            let headers = request.headers
            let trace = AuthAccessLog.traceIdentifiers(span: span) { name in HTTPField.Name(name).flatMap { headers[$0] } }
            AuthAccessLog.write(
                to: accessLog, requestID: id, trace: trace, endpoint: endpoint, method: request.method.rawValue, path: request.uri.path, status: response.status.code,
                bytesIn: request.headers[.contentLength].flatMap { Int($0) } ?? 0, bytesOut: response.body.contentLength ?? 0, nanoseconds: nanoseconds
            )
        }
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

    /// The request id of a request: the caller's when acceptable, else a new one (the same rules and format as the
    /// gateway's, `GatehouseObservability.RequestID`; an atomic counter, no lock).
    static func resolve(_ presented: String?) -> String {
        RequestID.resolve(presented) { RequestID.shared.next() }
    }
}
