import NIOCore

/// Matches replies to commands on one connection: commands are written back to back (pipelined) and their
/// promises queued; each reply completes the oldest promise (Redis answers in order).
///
/// A command whose reply is later than its deadline fails with `.timeout` and the connection is closed: the
/// late reply would otherwise complete the next command's promise. Every other pending command then fails with
/// `.connectionClosed`. One timer watches the oldest pending command only (deadlines are in queue order, as
/// every command gets the same timeout), so a pipeline of a thousand commands costs one scheduled task, not a
/// thousand.
///
/// Writes are flushed once per event-loop tick: all commands sent during one tick leave in one `write` call,
/// which is what makes concurrent callers share round trips.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = RESPValue
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<RESPValue>
        var deadline: NIODeadline
        var command: String
    }

    private var pending = CircularBuffer<Pending>(initialCapacity: 16)
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var flushScheduled = false
    private var closed = false
    private let statistics: RedisStatistics?
    /// SHA1s of the scripts loaded on this connection (`SCRIPT LOAD` is sent once per connection, lazily).
    var loadedScripts: Set<String> = []

    init(statistics: RedisStatistics?) {
        self.statistics = statistics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(RedisError(code: .connectionClosed, message: "the connection's handler was removed"))
        self.context = nil
    }

    /// Queues `command` with its reply promise; must run on the channel's event loop.
    func send<Command: RedisCommandEncodable>(_ command: Command, deadline: NIODeadline, promise: EventLoopPromise<RESPValue>) {
        guard let context, !closed else {
            promise.fail(RedisError(code: .connectionClosed, message: "\(command.name): the connection is closed"))
            return
        }
        pending.append(Pending(promise: promise, deadline: deadline, command: command.name))
        var buffer = context.channel.allocator.buffer(capacity: command.encodedLength)
        command.encode(into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: nil)
        if !flushScheduled {
            flushScheduled = true
            context.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [self] in
                flushScheduled = false
                self.context?.flush()
                statistics?.recordFlush()
            }
        }
        if timer == nil { armTimer(for: deadline, context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push = value { return }  // out-of-band (pub/sub, tracking); no command of ours subscribes
        guard let first = pending.popFirst() else {
            close(context, RedisError.protocolViolation("a reply arrived with no command waiting for it"))
            return
        }
        if case .error(let message) = value {
            first.promise.fail(RedisError(code: .server(message), message: "\(first.command): \(message)"))
        } else {
            first.promise.succeed(value)
        }
        if pending.isEmpty, let timer {
            timer.cancel()
            self.timer = nil
            timerDeadline = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        failAll(RedisError(code: .connectionClosed, message: "the connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context, error as? RedisError ?? RedisError(code: .connectionClosed, message: "connection error: \(error)"))
    }

    /// One timer for the oldest command; when it fires early (the oldest has been answered since), it re-arms
    /// for the new oldest instead of being cancelled and rescheduled on every reply.
    private func armTimer(for deadline: NIODeadline, context: ChannelHandlerContext) {
        timerDeadline = deadline
        timer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            timerDeadline = nil
            guard let context = self.context, let first = pending.first else { return }
            if first.deadline <= .now() {
                let expired = pending.removeFirst()
                expired.promise.fail(RedisError(code: .timeout, message: "\(expired.command): no reply within the timeout"))
                close(context, RedisError(code: .connectionClosed, message: "closed after a command timed out"))
            } else {
                armTimer(for: first.deadline, context: context)
            }
        }
    }

    private func close(_ context: ChannelHandlerContext, _ error: RedisError) {
        guard !closed else { return }
        closed = true
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        while let entry = pending.popFirst() {
            entry.promise.fail(RedisError(code: error.code, message: "\(entry.command): \(error.message)"))
        }
    }
}

@available(*, unavailable)
extension RedisChannelHandler: Sendable {}
