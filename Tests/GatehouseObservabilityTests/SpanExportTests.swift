@testable import GatehouseObservability
import Logging
import Testing

@Suite struct OTLPEncodingTests {
    @Test func varintsFollowTheProtobufSpecificationsExample() {
        // protobuf.dev "Encoding": 150 is 96 01, 300 is ac 02; field 1 varint 150 is 08 96 01.
        var writer = ProtobufWriter()
        writer.varint(300)
        #expect(writer.bytes == [0xAC, 0x02])
        var field = ProtobufWriter()
        field.varintField(1, 150)
        #expect(field.bytes == [0x08, 0x96, 0x01])
        var text = ProtobufWriter()
        text.string(2, "testing")  // the specification's string example: 12 07 74 65 73 74 69 6e 67
        #expect(text.bytes == [0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6E, 0x67])
    }

    @Test func aSpanEncodesItsIdsTimesAndAttributes() throws {
        let span = FinishedSpan(
            traceID: TraceID(high: 0x0102_0304_0506_0708, low: 0x090A_0B0C_0D0E_0F10), spanID: SpanID(0x1112_1314_1516_1718), parentSpanID: nil, name: "GET",
            kind: .server, startUnixNanoseconds: 1, endUnixNanoseconds: 2, attributes: [.init("k", .int(-1))]
        )
        let bytes = OTLPEncoding.encode(span)
        // trace_id: field 1, length 16, the id's bytes big-endian.
        #expect(Array(bytes[0..<18]) == [0x0A, 0x10] + Array(1...16))
        // span_id: field 2, length 8.
        #expect(Array(bytes[18..<28]) == [0x12, 0x08] + Array(0x11...0x18))
        // name "GET", kind SERVER (2), start and end as fixed64 (little-endian).
        #expect(Array(bytes[28..<33]) == [0x2A, 0x03, 0x47, 0x45, 0x54])
        #expect(Array(bytes[33..<35]) == [0x30, 0x02])
        #expect(Array(bytes[35..<44]) == [0x39, 1, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[44..<53]) == [0x41, 2, 0, 0, 0, 0, 0, 0, 0])
        // attributes: KeyValue{key "k", value AnyValue{int_value -1 (ten-byte varint)}}.
        #expect(Array(bytes[53...]) == [0x4A, 0x10, 0x0A, 0x01, 0x6B, 0x12, 0x0B, 0x18] + [UInt8](repeating: 0xFF, count: 9) + [0x01])
    }
}

@Suite struct SpanExporterTests {
    func span(_ index: UInt64) -> FinishedSpan {
        FinishedSpan(traceID: TraceID(high: 1, low: index), spanID: SpanID(index + 1), parentSpanID: nil, name: "s", kind: .internal, startUnixNanoseconds: 0, endUnixNanoseconds: 1)
    }

    @Test func aFullQueueDropsAndCounts() {
        var configuration = SpanExporter.Configuration(endpoint: "http://127.0.0.1:9/v1/traces", resource: [])
        configuration.maximumQueueSize = 10
        let exporter = SpanExporter(configuration: configuration, logger: Logger(label: "test"))
        for index in 0..<25 { exporter.record(span(UInt64(index))) }
        let statistics = exporter.statistics
        #expect(statistics.recorded == 25)
        #expect(statistics.queued == 10)
        #expect(statistics.dropped == 15)
    }

    @Test func aCollectorThatCannotBeReachedCountsTheBatchAsDropped() async {
        var configuration = SpanExporter.Configuration(endpoint: "http://127.0.0.1:9/v1/traces", resource: [])
        configuration.maximumBatchSize = 4
        configuration.exportTimeout = .seconds(2)
        let exporter = SpanExporter(configuration: configuration, logger: Logger(label: "test"))
        for index in 0..<6 { exporter.record(span(UInt64(index))) }
        await exporter.exportQueued()
        let statistics = exporter.statistics
        #expect(statistics.failedExports == 1)
        #expect(statistics.dropped == 4)
        #expect(statistics.queued == 2)  // the next round tries again
        #expect(statistics.exported == 0)
    }

    @Test func settingsFollowTheOpenTelemetryVariables() {
        let base = TracingSettings.resolve(
            environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"], configuredEndpoint: "http://file/v1/traces", configuredServiceName: nil,
            sampleRatio: 0.5, defaultServiceName: "gatehouse-gateway"
        )
        #expect(base.endpoint == "http://collector:4318/v1/traces")
        #expect(base.serviceName == "gatehouse-gateway")
        #expect(base.sampler == .parentBasedRatio(0.5))
        let full = TracingSettings.resolve(
            environment: [
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
                "OTEL_SERVICE_NAME": "edge", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b",
            ],
            configuredEndpoint: nil, configuredServiceName: "file-name", sampleRatio: 1, defaultServiceName: "gatehouse-auth"
        )
        #expect(full.endpoint == "http://traces:4318/custom")
        #expect(full.serviceName == "edge")
        #expect(full.sampler == TraceSampler(root: .ratio(0.25), parentBased: false))
        #expect(full.resource.contains(.init("team", .string("a b"))))
        #expect(full.resource.first == .init("service.name", .string("edge")))
        let fromFile = TracingSettings.resolve(
            environment: ["OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes"], configuredEndpoint: "http://file/v1/traces", configuredServiceName: "file-name",
            sampleRatio: 1, defaultServiceName: "gatehouse-auth"
        )
        #expect(fromFile.endpoint == "http://file/v1/traces")
        #expect(fromFile.serviceName == "from-attributes")
        let off = TracingSettings.resolve(environment: [:], configuredEndpoint: nil, configuredServiceName: nil, sampleRatio: 1, defaultServiceName: "x")
        #expect(off.endpoint == nil)
        let disabled = TracingSettings.resolve(
            environment: ["OTEL_SDK_DISABLED": "true"], configuredEndpoint: "http://file/v1/traces", configuredServiceName: nil, sampleRatio: 1, defaultServiceName: "x"
        )
        #expect(disabled.endpoint == nil)
    }
}
