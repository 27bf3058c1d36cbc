import Logging
import NIOCore
import NIOPosix

/// One connection to a Redis server, handshake done (`AUTH`, `HELLO 3`, `SELECT`), pipelining commands.
///
/// Thread-safe: commands may be sent from any thread; they hop to the connection's event loop (a caller on that
/// loop pays no hop — the pool prefers such connections).
public final class RedisConnection: Sendable {
    /// The loop the connection's I/O runs on; reply futures complete there.
    public let eventLoop: any EventLoop
    /// The protocol the handshake settled on: 3 after a successful `HELLO 3`, else 2.
    public let protocolVersion: Int
    let channel: any Channel
    private let handler: NIOLoopBound<RedisChannelHandler>
    private let commandTimeout: TimeAmount

    private init(channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>, commandTimeout: TimeAmount, protocolVersion: Int) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.handler = handler
        self.commandTimeout = commandTimeout
        self.protocolVersion = protocolVersion
    }

    /// Completes when the connection has closed, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Sends one command; the future fails with a `RedisError` (`.server` for an error reply).
    public func send(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        send(command, deadline: .now() + commandTimeout)
    }

    func send(_ command: RedisCommand, deadline: NIODeadline) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        if eventLoop.inEventLoop {
            handler.value.send(command, deadline: deadline, promise: promise)
        } else {
            eventLoop.execute { [handler] in handler.value.send(command, deadline: deadline, promise: promise) }
        }
        return promise.futureResult
    }

    /// Runs `script` with `EVALSHA`. The first use on this connection sends `SCRIPT LOAD` just before it, in the
    /// same write (no extra round trip); a `NOSCRIPT` reply (the server's script cache was flushed or the server
    /// restarted) loads it again and retries once.
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue> {
        evaluate(script, RedisCommand(["EVALSHA", script.sha1, String(keys.count)] + keys + arguments))
    }

    /// `evaluate` with the `EVALSHA` command already built (`GCRACall` encodes its fixed part once per limit).
    func evaluate<Command: RedisCommandEncodable>(_ script: RedisScript, _ command: Command) -> EventLoopFuture<RESPValue> {
        if eventLoop.inEventLoop {
            return evaluateOnLoop(script, command: command, retry: true)
        }
        return eventLoop.flatSubmit { self.evaluateOnLoop(script, command: command, retry: true) }
    }

    private func evaluateOnLoop<Command: RedisCommandEncodable>(_ script: RedisScript, command: Command, retry: Bool) -> EventLoopFuture<RESPValue> {
        let handler = self.handler.value
        let deadline = NIODeadline.now() + commandTimeout
        if !handler.loadedScripts.contains(script.sha1) {
            // The load's own reply is not awaited: if it failed, EVALSHA fails with NOSCRIPT right after it.
            handler.loadedScripts.insert(script.sha1)
            let load = eventLoop.makePromise(of: RESPValue.self)
            handler.send(RedisCommand(["SCRIPT", "LOAD", script.source]), deadline: deadline, promise: load)
            load.futureResult.whenFailure { [handler = self.handler] _ in handler.value.loadedScripts.remove(script.sha1) }
        }
        let promise = eventLoop.makePromise(of: RESPValue.self)
        handler.send(command, deadline: deadline, promise: promise)
        guard retry else { return promise.futureResult }
        return promise.futureResult.flatMapError { [self] error in
            guard (error as? RedisError)?.serverErrorCode == "NOSCRIPT" else { return eventLoop.makeFailedFuture(error) }
            self.handler.value.loadedScripts.remove(script.sha1)
            return evaluateOnLoop(script, command: command, retry: false)
        }
    }

    /// Closes the connection; pending commands fail with `.connectionClosed`.
    public func close() -> EventLoopFuture<Void> {
        channel.close().recover { _ in }
    }

    /// Opens a connection on `eventLoop` and runs the handshake: `AUTH`, `HELLO 3` (when `resp3`; a refusal
    /// means RESP2), `SELECT`, written together and checked in order.
    public static func connect(
        configuration: RedisConfiguration, on eventLoop: any EventLoop, statistics: RedisStatistics? = nil
    ) -> EventLoopFuture<RedisConnection> {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPDecoder()), RedisChannelHandler(statistics: statistics),
                    ])
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .flatMap { channel in
                let handler: RedisChannelHandler
                do {
                    handler = try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self)
                } catch {
                    return channel.close().flatMapThrowing { throw error }
                }
                let bound = NIOLoopBound(handler, eventLoop: channel.eventLoop)
                return handshake(channel: channel, handler: bound, configuration: configuration)
                    .flatMapError { error in
                        channel.close().recover { _ in }.flatMapThrowing { throw error }
                    }
            }
    }

    private static func handshake(
        channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>, configuration: RedisConfiguration
    ) -> EventLoopFuture<RedisConnection> {
        let eventLoop = channel.eventLoop
        let deadline = NIODeadline.now() + configuration.connectTimeout
        func send(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
            let promise = eventLoop.makePromise(of: RESPValue.self)
            handler.value.send(command, deadline: deadline, promise: promise)
            return promise.futureResult
        }
        var auth: EventLoopFuture<RESPValue>?
        if let password = configuration.password {
            auth = send(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        let hello: EventLoopFuture<RESPValue>? = configuration.resp3 ? send(["HELLO", "3"]) : nil
        let select: EventLoopFuture<RESPValue>? = configuration.database.map { send(["SELECT", String($0)]) }
        let authenticated = auth.map { $0.map { _ in () } } ?? eventLoop.makeSucceededVoidFuture()
        return authenticated.flatMap { () -> EventLoopFuture<Int> in
            guard let hello else { return eventLoop.makeSucceededFuture(2) }
            // Redis < 6 answers `ERR unknown command`, a server with RESP3 disabled `NOPROTO`: both mean RESP2.
            return hello.map { _ in 3 }.flatMapErrorThrowing { error in
                guard let code = (error as? RedisError)?.serverErrorCode, code == "ERR" || code == "NOPROTO" else { throw error }
                return 2
            }
        }.flatMap { version in
            (select ?? eventLoop.makeSucceededFuture(.simpleString("OK"))).map { _ in
                RedisConnection(channel: channel, handler: handler, commandTimeout: configuration.commandTimeout, protocolVersion: version)
            }
        }
    }
}
