import Foundation
import Logging
import Testing

@testable import GatehouseObservability

@Suite struct JSONLogHandlerTests {
    func decode(_ line: String) throws -> [String: Any] {
        #expect(line.hasSuffix("}\n"))
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test func writesOneValidJSONObjectPerLine() throws {
        let line = JSONLogHandler.format(
            level: .info, label: "gatehouse", message: "say \"hi\"\n\ttab \u{01}", metadata: ["status": "200", "path": "/token", "list": ["a", "b"]],
            timestamp: "2026-11-21T00:00:00.000Z"
        )
        #expect(line.filter { $0 == "\n" }.count == 1)
        let object = try decode(line)
        #expect(object["msg"] as? String == "say \"hi\"\n\ttab \u{01}")
        #expect(object["level"] as? String == "info")
        #expect(object["status"] as? String == "200")
        #expect(object["list"] as? [String] == ["a", "b"])
    }

    @Test func timestampsAreRFC3339UTCWithMilliseconds() throws {
        let before = Date()
        let stamp = JSONLogHandler.timestamp()
        #expect(stamp.utf8.count == 24)
        #expect(stamp.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let parsed = try #require(formatter.date(from: stamp))
        #expect(abs(parsed.timeIntervalSince(before)) < 2)
    }

    @Test(arguments: ["access_token", "refresh_token", "password", "client_secret", "Authorization", "cookie", "code", "code_verifier", "session"])
    func credentialKeysAreRedacted(key: String) throws {
        let secret = "s3cr3t-value-\(key)"
        let line = JSONLogHandler.format(level: .error, label: "t", message: "m", metadata: [key: .string(secret), "nested": [key: .string(secret)]], timestamp: "x")
        #expect(!line.contains(secret))
        let object = try decode(line)
        #expect(object[key] as? String == "[redacted]")
        #expect((object["nested"] as? [String: Any])?[key] as? String == "[redacted]")
    }

    @Test func ordinaryKeysAreKept() {
        #expect(!JSONLogHandler.isSensitive("client_id"))
        #expect(!JSONLogHandler.isSensitive("request_id"))
        #expect(!JSONLogHandler.isSensitive("remote"))
    }
}
