/// Trace context and span export (`tracing:`), the same block in the gateway's and the authorization server's YAML.
///
/// Environment variables of the OpenTelemetry specification (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
/// `OTEL_RESOURCE_ATTRIBUTES`) are read where the servers are started, and win over the file (`TracingSettings`).
public struct TracingConfiguration: Sendable, Equatable {
    /// Whose incoming trace context is continued.
    public enum Incoming: String, Sendable, Equatable, CaseIterable {
        /// Every client's (the default).
        case trust
        /// Only that of peers in `trusted_proxies`; anyone else's is replaced by a new trace (its sampled flag is
        /// ignored).
        case trustedProxies = "trusted_proxies"
        /// Nobody's: every request starts a trace.
        case ignore
    }

    /// Header formats sent upstream.
    public enum Format: String, Sendable, Equatable, CaseIterable {
        /// `traceparent` and `tracestate`.
        case w3c
        /// The single `b3` header.
        case b3
        /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`.
        case b3multi
        /// `X-Amzn-Trace-Id`.
        case xray
    }

    /// The share of new traces (no sampling decision received) that are recorded. Default 0.01 (`gatehouse demo`:
    /// 1.0).
    public var sampleRatio: Double = 0.01
    /// The full OTLP/HTTP traces URL (`http://collector:4318/v1/traces`), like `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    /// Default none: spans are not exported (trace context still propagates).
    public var otlpEndpoint: String?
    /// `service.name` of the exported spans. Default: `gatehouse-gateway` / `gatehouse-auth`.
    public var serviceName: String?
    /// Gateway only. Default `trust`.
    public var incoming: Incoming = .trust
    /// Gateway only. Default `[w3c]`.
    public var propagate: [Format] = [.w3c]

    public init(sampleRatio: Double = 0.01, otlpEndpoint: String? = nil, serviceName: String? = nil, incoming: Incoming = .trust, propagate: [Format] = [.w3c]) {
        self.sampleRatio = sampleRatio
        self.otlpEndpoint = otlpEndpoint
        self.serviceName = serviceName
        self.incoming = incoming
        self.propagate = propagate
    }

    /// Reads a `tracing:` mapping; `gateway` allows the gateway-only keys.
    static func parse(_ reader: inout YAMLMappingReader, gateway: Bool) throws -> TracingConfiguration {
        var value = TracingConfiguration()
        if let text = try reader.string("sample_ratio") {
            guard let ratio = Double(text), ratio >= 0, ratio <= 1 else { throw reader.error("sample_ratio", "expected a number from 0 to 1, got '\(text)'") }
            value.sampleRatio = ratio
        }
        if let endpoint = try reader.string("otlp_endpoint"), !endpoint.isEmpty {
            let lowered = endpoint.lowercased()
            guard lowered.hasPrefix("http://") || lowered.hasPrefix("https://") else {
                throw reader.error("otlp_endpoint", "expected the full http:// or https:// URL of the OTLP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces), got '\(endpoint)'")
            }
            value.otlpEndpoint = endpoint
        }
        if let name = try reader.string("service_name") {
            guard !name.isEmpty else { throw reader.error("service_name", "must not be empty") }
            value.serviceName = name
        }
        if gateway {
            if let text = try reader.string("incoming") {
                guard let mode = Incoming(rawValue: text) else { throw reader.error("incoming", "expected trust, trusted_proxies or ignore, got '\(text)'") }
                value.incoming = mode
            }
            if let list = try reader.stringList("propagate") {
                var formats: [Format] = []
                for (index, item) in list.enumerated() {
                    guard let format = Format(rawValue: item.lowercased()) else {
                        throw reader.itemError("propagate", index, "expected w3c, b3, b3multi or xray, got '\(item)'")
                    }
                    if !formats.contains(format) { formats.append(format) }
                }
                value.propagate = formats
            }
        }
        return value
    }

    /// The `tracing:` section of a root mapping, or the defaults.
    static func parseSection(_ root: inout YAMLMappingReader, gateway: Bool) throws -> TracingConfiguration {
        guard root.node("tracing") != nil else { return TracingConfiguration() }
        var reader = try root.mapping("tracing")
        let value = try parse(&reader, gateway: gateway)
        try reader.finish()
        return value
    }
}
