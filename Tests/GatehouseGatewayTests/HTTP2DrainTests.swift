import NIOCore
import NIOEmbedded
import Testing

@testable import GatehouseGateway

/// Graceful shutdown of a downstream HTTP/2 connection (RFC 9113 §6.8) on the gateway's real connection pipeline
/// (`GatewayServer.configureHTTP2Connection`), fed raw frames on an EmbeddedChannel so that the order of the client's
/// frames and the drain is explicit rather than a matter of timing.
@Suite struct HTTP2DrainTests {
    /// One HTTP/2 frame as it went over the wire.
    struct Frame: CustomStringConvertible {
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32
        var payload: [UInt8]

        static let settings: UInt8 = 0x4, ping: UInt8 = 0x6, goAway: UInt8 = 0x7
        var isAck: Bool { flags & 0x1 != 0 }
        /// GOAWAY: (last stream id, error code).
        var goAway: (lastStreamID: UInt32, errorCode: UInt32)? {
            guard type == Self.goAway, payload.count >= 8 else { return nil }
            return (Self.uint32(payload[0..<4]) & 0x7fff_ffff, Self.uint32(payload[4..<8]))
        }
        var description: String {
            switch type {
            case Self.settings: return isAck ? "SETTINGS ACK" : "SETTINGS"
            case Self.ping: return isAck ? "PING ACK" : "PING"
            case Self.goAway: return "GOAWAY(last \(goAway!.lastStreamID), error \(goAway!.errorCode))"
            default: return "frame type \(type)"
            }
        }
        static func uint32(_ bytes: ArraySlice<UInt8>) -> UInt32 { bytes.reduce(0) { $0 << 8 | UInt32($1) } }
    }

    /// The client's side of one connection: what it sends, and the frames the gateway wrote back so far.
    final class Client {
        let channel = EmbeddedChannel()
        private var unparsed: [UInt8] = []

        init() async throws {
            try await GatewayServer.configureHTTP2Connection(channel, drainTimeout: .seconds(30)) { stream in
                stream.eventLoop.makeSucceededVoidFuture()
            }.get()
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).get()
        }

        /// Bytes from the client, read by the gateway as one read (NIO flushes its answers at the read's end).
        func send(_ bytes: [UInt8]) throws {
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes))
            channel.pipeline.fireChannelReadComplete()
            channel.embeddedEventLoop.run()
        }

        func send(type: UInt8, flags: UInt8, payload: [UInt8] = []) throws {
            let length = UInt32(payload.count)
            try send([UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags, 0, 0, 0, 0] + payload)
        }

        /// The connection preface with an empty SETTINGS frame.
        func sendPreface() throws {
            try send(Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, Frame.settings, 0, 0, 0, 0, 0])
        }

        /// Frames the gateway wrote since the last call.
        func received() throws -> [Frame] {
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                unparsed += buffer.readableBytesView
            }
            var frames: [Frame] = []
            while unparsed.count >= 9 {
                let length = Int(unparsed[0]) << 16 | Int(unparsed[1]) << 8 | Int(unparsed[2])
                guard unparsed.count >= 9 + length else { break }
                frames.append(Frame(
                    type: unparsed[3], flags: unparsed[4], streamID: Frame.uint32(unparsed[5..<9]) & 0x7fff_ffff,
                    payload: Array(unparsed[9..<9 + length])
                ))
                unparsed.removeFirst(9 + length)
            }
            return frames
        }

        /// Handshake up to the point where the gateway acknowledged our SETTINGS and we have not acknowledged its.
        func handshakeWithoutOurAck() throws {
            let serverPreface = try received()
            #expect(serverPreface.contains { $0.type == Frame.settings && !$0.isAck }, "the server's SETTINGS: \(serverPreface)")
            try sendPreface()
            let answer = try received()
            #expect(answer.contains { $0.type == Frame.settings && $0.isAck }, "the server acknowledges our SETTINGS: \(answer)")
        }

        /// Answers the drain's PING and returns every frame that followed it.
        func acknowledgePing(in frames: [Frame]) throws -> [Frame] {
            let ping = try #require(frames.first { $0.type == Frame.ping && !$0.isAck }, "the drain's PING: \(frames)")
            try send(type: Frame.ping, flags: 0x1, payload: ping.payload)
            return try received()
        }
    }

    static func expectGracefulShutdown(before: [Frame], after: [Frame], channel: EmbeddedChannel) {
        let all = before + after
        let goAways = all.compactMap(\.goAway)
        #expect(goAways.allSatisfy { $0.errorCode == 0 }, "only NO_ERROR GOAWAYs: \(all)")
        // RFC 9113 §6.8: GOAWAY with 2^31-1 and a PING, then, once the PING is acknowledged, GOAWAY with the last
        // stream (none was opened: 0).
        #expect(before.map(\.description) == ["GOAWAY(last 2147483647, error 0)", "PING"], "\(all)")
        #expect(after.map(\.description) == ["GOAWAY(last 0, error 0)"], "\(all)")
        #expect(!channel.isActive, "the gateway closes the idle connection after the final GOAWAY")
    }

    @Test func drainWhileTheClientsSettingsAckIsInFlightEndsGracefully() async throws {
        let client = try await Client()
        try client.handshakeWithoutOurAck()

        // The drain reaches the connection before the client's acknowledgement of the server's SETTINGS does.
        client.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        let beforeAck = try client.received()
        #expect(client.channel.isActive)

        // The client did nothing wrong: it acknowledges the SETTINGS (RFC 9113 §6.5.3) as it must.
        var ackError: (any Error)?
        do { try client.send(type: Frame.settings, flags: 0x1) } catch { ackError = error }
        let afterAck = try client.received()
        #expect(ackError == nil, "the SETTINGS ACK must not be a connection error: \(String(describing: ackError)), frames \(beforeAck + afterAck)")

        let shutdown = beforeAck + afterAck
        let afterPing = try client.acknowledgePing(in: shutdown)
        Self.expectGracefulShutdown(before: shutdown, after: afterPing, channel: client.channel)
    }

    @Test func drainAfterTheClientsSettingsAckSendsGoAwayAtOnce() async throws {
        let client = try await Client()
        try client.handshakeWithoutOurAck()
        try client.send(type: Frame.settings, flags: 0x1)
        #expect(try client.received().isEmpty)

        client.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        let shutdown = try client.received()
        let afterPing = try client.acknowledgePing(in: shutdown)
        Self.expectGracefulShutdown(before: shutdown, after: afterPing, channel: client.channel)
    }

    @Test func theSettingsAckGateLeavesThePipelineOnceAcknowledged() async throws {
        let client = try await Client()
        try client.handshakeWithoutOurAck()
        // Premise: the gate is there while our SETTINGS is unacknowledged.
        #expect((try? client.channel.pipeline.syncOperations.handler(type: HTTP2QuiesceAfterSettingsAck.self)) != nil)
        try client.send(type: Frame.settings, flags: 0x1)
        #expect((try? client.channel.pipeline.syncOperations.handler(type: HTTP2QuiesceAfterSettingsAck.self)) == nil)
    }
}
