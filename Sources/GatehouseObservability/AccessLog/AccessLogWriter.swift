import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes access-log lines to stdout or a file from a thread of its own: event loops hand it whole buffers of lines
/// (`submit`), never calling write(2) themselves. The file is opened with `O_APPEND` and reopened by `reopen()`
/// (SIGUSR1, after a log rotation moved it away); `close()` writes everything handed over and stops the thread.
/// `@unchecked Sendable`: its state is behind a `Mutex` and atomics; `NSCondition` only wakes the thread.
public final class AccessLogWriter: @unchecked Sendable {
    /// Where the lines go.
    public enum Destination: Sendable, Equatable {
        case standardOutput
        case file(String)
    }

    private struct State {
        var pending: [[UInt8]] = []
        var pendingBytes = 0
        var reopenRequested = false
        var closing = false
        var closed = false
        /// Batches handed over but not yet written (so `flush` knows when it is done).
        var unwritten = 0
    }

    public let destination: Destination
    private let state = Mutex(State())
    private let condition = NSCondition()
    private let descriptor = Atomic<Int32>(-1)
    /// Lines lost because the writer could not write them (disk full, file gone and not creatable).
    public let failedWrites = Atomic<Int>(0)

    /// Every open writer, for `reopenAll()` (SIGUSR1 reopens the logs of both servers of `gatehouse demo`).
    private static let registry = Mutex<[ObjectIdentifier: AccessLogWriter]>([:])

    /// Opens the destination (the file is created 0640 if missing) and starts the writer thread.
    public init(destination: Destination) throws {
        self.destination = destination
        descriptor.store(try Self.openDescriptor(destination), ordering: .relaxed)
        let thread = Thread { [self] in self.run() }
        thread.name = "gatehouse-access-log"
        thread.start()
        Self.registry.withLock { $0[ObjectIdentifier(self)] = self }
    }

    /// Parses a configured `access_log.path`: `stdout`, or a file name.
    public convenience init(path: String) throws {
        try self.init(destination: path == "stdout" ? .standardOutput : .file(path))
    }

    private static func openDescriptor(_ destination: Destination) throws -> Int32 {
        switch destination {
        case .standardOutput:
            return STDOUT_FILENO
        case .file(let path):
            let fd = systemOpen(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            guard fd >= 0 else { throw AccessLogError(path: path, errno: errno) }
            return fd
        }
    }

    /// Hands complete lines to the writer thread: one short lock; the thread is woken only once `wakeThreshold`
    /// bytes wait (else its own 100 ms timer picks them up), so a submission costs no system call.
    public func submit(_ lines: [UInt8]) {
        guard !lines.isEmpty else { return }
        let wake = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.pending.append(lines)
            state.pendingBytes += lines.count
            state.unwritten += 1
            return state.pendingBytes >= Self.wakeThreshold
        }
        guard wake else { return }
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    /// Pending bytes that wake the writer thread at once.
    static let wakeThreshold = 256 * 1024

    /// Writes one line (`AccessLogLine`) from any thread (the authorization server's request tasks).
    public func append(_ line: AccessLogLine) {
        submit(line.bytes)
    }

    /// Reopens the file at the next write (log rotation).
    public func reopen() {
        state.withLock { $0.reopenRequested = true }
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    /// Reopens every open writer's file (SIGUSR1).
    public static func reopenAll() {
        for writer in registry.withLock({ Array($0.values) }) { writer.reopen() }
    }

    /// Closes every open writer (at exit, after the servers stopped), writing what they hold.
    public static func closeAll() {
        for writer in registry.withLock({ Array($0.values) }) { writer.close() }
    }

    /// Waits until every buffer handed over so far is written.
    public func flush() {
        while state.withLock({ $0.unwritten > 0 && !$0.closed }) {
            condition.lock()
            condition.signal()
            condition.unlock()
            usleep(1000)
        }
    }

    /// Writes what was handed over, then stops the thread and closes the file. Later submissions are dropped.
    public func close() {
        state.withLock { $0.closing = true }
        condition.lock()
        condition.signal()
        condition.unlock()
        while !state.withLock({ $0.closed }) { usleep(1000) }
        Self.registry.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
    }

    private func run() {
        while true {
            condition.lock()
            var work = state.withLock { state -> (batches: [[UInt8]], reopen: Bool, closing: Bool) in
                let taken = (state.pending, state.reopenRequested, state.closing)
                state.pending = []
                state.pendingBytes = 0
                state.reopenRequested = false
                return taken
            }
            if work.batches.isEmpty && !work.reopen && !work.closing {
                _ = condition.wait(until: Date(timeIntervalSinceNow: 0.1))
                condition.unlock()
                continue
            }
            condition.unlock()
            if work.reopen, case .file = destination, let fd = try? Self.openDescriptor(destination) {
                let old = descriptor.exchange(fd, ordering: .relaxed)
                if old >= 0 { _ = systemClose(old) }
            }
            let count = work.batches.count
            for batch in work.batches { write(batch) }
            work.batches = []
            state.withLock { $0.unwritten -= count }
            if work.closing {
                // Anything submitted while the last batches were written goes too.
                let rest = state.withLock { state -> [[UInt8]] in
                    let rest = state.pending
                    state.pending = []
                    state.pendingBytes = 0
                    state.unwritten = 0
                    return rest
                }
                for batch in rest { write(batch) }
                if case .file = destination { _ = systemClose(descriptor.exchange(-1, ordering: .relaxed)) }
                state.withLock { $0.closed = true }
                return
            }
        }
    }

    private func write(_ bytes: [UInt8]) {
        let fd = descriptor.load(ordering: .relaxed)
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = systemWrite(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failedWrites.wrappingAdd(1, ordering: .relaxed)
                    return
                }
                offset += written
            }
        }
    }
}

/// The access log's file could not be opened.
public struct AccessLogError: Error, CustomStringConvertible {
    public let path: String
    public let errno: Int32
    public var description: String { "access_log.path: cannot open '\(path)': \(String(cString: strerror(errno)))" }
}

/// Lines waiting on one event loop (or one connection) for the writer: appended without a lock, handed over a
/// buffer at a time — when it passes `threshold` bytes, and on the loop's tick.
public struct AccessLogBuffer {
    public private(set) var bytes: [UInt8] = []
    /// Hand-over size. 64 KiB: a few hundred lines per lock and thread wake-up.
    public static let threshold = 64 * 1024

    public init() {}

    /// Appends one line (`line` ends with a newline) and hands the buffer over once it is large.
    public mutating func append(_ line: AccessLogLine, to writer: AccessLogWriter) {
        if bytes.capacity == 0 { bytes.reserveCapacity(Self.threshold + 1024) }
        bytes.append(contentsOf: line.bytes)
        if bytes.count >= Self.threshold { handOver(to: writer) }
    }

    /// Hands what is buffered to the writer.
    public mutating func handOver(to writer: AccessLogWriter) {
        guard !bytes.isEmpty else { return }
        writer.submit(bytes)
        bytes = []
    }
}

// Outside the class, whose `close()` and `write(_:)` would shadow them.
private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { open(path, flags, mode) }
private func systemClose(_ fd: Int32) -> Int32 { close(fd) }
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int { write(fd, buffer, count) }
