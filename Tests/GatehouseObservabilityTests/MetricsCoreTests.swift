import Foundation
import Testing

@testable import GatehouseObservability

@Suite struct PrometheusTextTests {
    @Test func familiesSamplesAndEscapingFollowTheTextFormat() {
        var text = PrometheusText()
        text.family("demo_total", .counter, help: "A help text with a \\ and a\nnewline.")
        text.sample("demo_total", [("route", "a\"b\\c\nd"), ("code", "2xx")], 3)
        text.sample("demo_seconds", [], 0.25)
        // The format's own example of label-value escaping: `msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""}`.
        text.sample("msdos_file_access_time_seconds", [("path", "C:\\DIR\\FILE.TXT"), ("error", "Cannot find file:\n\"FILE.TXT\"")], 1.458255915e9)
        #expect(
            text.text == """
                # HELP demo_total A help text with a \\\\ and a\\nnewline.
                # TYPE demo_total counter
                demo_total{route="a\\"b\\\\c\\nd",code="2xx"} 3
                demo_seconds 0.25
                msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1458255915

                """
        )
    }

    @Test func valuesAreWrittenAsPrometheusWritesThem() {
        #expect(PrometheusText.format(1) == "1")
        #expect(PrometheusText.format(2.5) == "2.5")
        #expect(PrometheusText.format(0.0005) == "0.0005")
        #expect(PrometheusText.format(.infinity) == "+Inf")
        #expect(PrometheusText.format(-.infinity) == "-Inf")
        #expect(PrometheusText.format(.nan) == "NaN")
    }

    /// The format's histogram example: cumulative buckets ending at `+Inf`, then `_sum` and `_count`.
    @Test func histogramBucketsAreCumulative() {
        var text = PrometheusText()
        text.histogram("http_request_duration_seconds", bounds: [0.05, 0.1, 0.2, 0.5, 1], counts: [24054, 9390, 66948, 28997, 4599, 10332], sum: 53423)
        #expect(
            text.text == """
                http_request_duration_seconds_bucket{le="0.05"} 24054
                http_request_duration_seconds_bucket{le="0.1"} 33444
                http_request_duration_seconds_bucket{le="0.2"} 100392
                http_request_duration_seconds_bucket{le="0.5"} 129389
                http_request_duration_seconds_bucket{le="1"} 133988
                http_request_duration_seconds_bucket{le="+Inf"} 144320
                http_request_duration_seconds_sum 53423
                http_request_duration_seconds_count 144320

                """
        )
    }
}

@Suite struct LoopCountersTests {
    @Test func countersGrowWhenAReloadAddsLabelsAndSumAcrossLoops() {
        var first = LoopCounters(count: 2)
        first.add(1)
        first.add(5, 3)  // past the end: grows
        var second = LoopCounters()
        second.add(1, 2)
        var sum = LoopCounters()
        sum.add(first.snapshot())
        sum.add(second.snapshot())
        #expect(sum[1] == 3 && sum[5] == 3 && sum[0] == 0 && sum[9] == 0)
    }

    @Test func aSnapshotSharesNoStorageWithTheLoopsArray() {
        var counters = LoopCounters(count: 1)
        counters.add(0)
        let snapshot = counters.snapshot()
        counters.add(0)
        #expect(snapshot[0] == 1 && counters[0] == 2)
        counters.values.withUnsafeBufferPointer { live in
            snapshot.values.withUnsafeBufferPointer { copy in #expect(live.baseAddress != copy.baseAddress) }
        }
    }

    @Test func histogramSlotsFollowTheLeRule() {
        let buckets = HistogramBuckets.requestDuration
        #expect(buckets.slot(nanoseconds: 0) == 0)
        #expect(buckets.slot(nanoseconds: 500_000) == 0)  // le="0.0005" includes 0.5 ms itself
        #expect(buckets.slot(nanoseconds: 500_001) == 1)
        #expect(buckets.slot(nanoseconds: 10_000_000_000) == buckets.seconds.count - 1)
        #expect(buckets.slot(nanoseconds: 10_000_000_001) == buckets.seconds.count)  // +Inf
        var histograms = LoopHistograms(buckets: buckets)
        histograms.observe(2, nanoseconds: 700_000)
        histograms.observe(2, nanoseconds: 20_000_000_000)
        #expect(histograms.count(2) == 2 && histograms.count(0) == 0)
        #expect(histograms.sum(2) == 20.0007)
    }

    @Test func atomicCountersCountFromManyThreads() async {
        let counters = AtomicCounters(count: 2)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { for _ in 0..<10_000 { counters.add(1) } } }
        }
        #expect(counters[1] == 80_000 && counters[0] == 0)
        counters.add(7)  // out of range: ignored, not a crash
    }
}

@Suite struct AccessLogTests {
    @Test func aLineIsOneJSONObjectWithTheCommonFields() throws {
        var line = AccessLogLine(service: "gatehouse-gateway", requestID: "r-1", time: .init(seconds: 1_764_963_001, nanoseconds: 123_456_789))
        line.field("route", "api")
        line.field("path", "/a\"b")
        line.field("status", 200)
        line.milliseconds("duration_ms", nanoseconds: 1_532_400)
        line.field("upstream", host: "127.0.0.1", port: 8081)
        line.finish()
        #expect(line.text.hasSuffix("}\n") && line.text.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.bytes)) as? [String: Any])
        #expect(object["time"] as? String == "2025-12-05T19:30:01.123Z")
        #expect(object["service"] as? String == "gatehouse-gateway")
        #expect(object["request_id"] as? String == "r-1")
        #expect(object["trace_id"] as? String == "" && object["span_id"] as? String == "")
        #expect(object["path"] as? String == "/a\"b")
        #expect(object["status"] as? Int == 200)
        #expect((object["duration_ms"] as? NSNumber)?.doubleValue == 1.532)
        #expect(object["upstream"] as? String == "127.0.0.1:8081")
    }

    @Test func traceIdsAreWrittenAsTheirHexForm() throws {
        var storage: [UInt8] = []
        let trace = TraceID(high: 0x0af7_6519_16cd_43dd, low: 0x8448_eb21_1c80_319c)
        var line = AccessLogLine(service: "s", requestID: "r", trace: trace, span: SpanID(0x00f0_67aa_0ba9_02b7), reusing: &storage)
        line.finish()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.bytes)) as? [String: Any])
        #expect(object["trace_id"] as? String == "0af7651916cd43dd8448eb211c80319c" && object["trace_id"] as? String == trace.description)
        #expect(object["span_id"] as? String == "00f067aa0ba902b7")
        #expect(object["request_id"] as? String == "r")
    }

    @Test func aLineReusesTheBufferItIsGiven() {
        var storage: [UInt8] = []
        storage.reserveCapacity(1024)
        let address = storage.withUnsafeBufferPointer { $0.baseAddress }
        var line = AccessLogLine(service: "s", requestID: "r", reusing: &storage)
        line.finish()
        line.recycle(into: &storage)
        #expect(storage.withUnsafeBufferPointer { $0.baseAddress } == address)  // the same buffer, not a new one
        var next = AccessLogLine(service: "s", requestID: "second", reusing: &storage)
        next.finish()
        #expect(next.text.contains("\"request_id\":\"second\"") && !next.text.contains("\"request_id\":\"r\""))
    }

    @Test func theWriterWritesEverythingByCloseAndReopensAMovedFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("access-log-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("access.log").path
        let writer = try AccessLogWriter(path: path)
        var buffer = AccessLogBuffer()
        for index in 0..<1000 {
            var line = AccessLogLine(service: "test", requestID: "before-\(index)")
            line.finish()
            buffer.append(line, to: writer)
        }
        buffer.handOver(to: writer)
        writer.flush()
        // logrotate: the file is moved away, then SIGUSR1 asks for a reopen.
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        AccessLogWriter.reopenAll()
        var after = AccessLogLine(service: "test", requestID: "after")
        after.finish()
        // The reopen was asked before this line was handed over, so the writer reopens before it writes the line.
        writer.append(after)
        writer.flush()
        #expect(FileManager.default.fileExists(atPath: path))
        writer.close()
        let rotated = try String(contentsOfFile: path + ".1", encoding: .utf8)
        let current = try String(contentsOfFile: path, encoding: .utf8)
        #expect(rotated.split(separator: "\n").count == 1000)
        #expect(rotated.contains("\"request_id\":\"before-999\""))
        #expect(current.contains("\"request_id\":\"after\"") && !current.contains("before-"))
    }
}
