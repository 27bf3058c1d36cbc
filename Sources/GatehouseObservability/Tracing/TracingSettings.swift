import Foundation

/// What a server's tracing does, resolved from its `tracing:` section and the OpenTelemetry environment variables
/// (which win over the file, as the OpenTelemetry specification expects of SDK configuration):
/// - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full traces URL; else `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces`
///   appended; else `tracing.otlp_endpoint` (a full URL). None: no export.
/// - `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `tracing.service_name`, else the
///   server's default name.
/// - `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`), else parent-based with `tracing.sample_ratio`.
/// - `OTEL_RESOURCE_ATTRIBUTES`: `key=value,…` (values percent-decoded) added to the resource.
/// - `OTEL_SDK_DISABLED=true`: no export.
public struct TracingSettings: Sendable {
    /// The full OTLP/HTTP traces URL; nil: spans are not exported.
    public var endpoint: String?
    public var serviceName: String
    public var sampler: TraceSampler
    /// Resource attributes, `service.name` first.
    public var resource: [FinishedSpan.Attribute]

    public init(endpoint: String?, serviceName: String, sampler: TraceSampler, resource: [FinishedSpan.Attribute] = []) {
        self.endpoint = endpoint
        self.serviceName = serviceName
        self.sampler = sampler
        self.resource = [.init("service.name", .string(serviceName))] + resource.filter { $0.key != "service.name" }
    }

    public static func resolve(
        environment: [String: String], configuredEndpoint: String?, configuredServiceName: String?, sampleRatio: Double, defaultServiceName: String
    ) -> TracingSettings {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) } }
        var endpoint: String?
        if let full = value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            endpoint = full
        } else if let base = value("OTEL_EXPORTER_OTLP_ENDPOINT") {
            endpoint = (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/v1/traces"
        } else {
            endpoint = configuredEndpoint
        }
        if value("OTEL_SDK_DISABLED")?.lowercased() == "true" { endpoint = nil }
        let attributes = parseResourceAttributes(value("OTEL_RESOURCE_ATTRIBUTES") ?? "")
        let fromAttributes = attributes.first { $0.key == "service.name" }.flatMap { attribute -> String? in
            if case .string(let name) = attribute.value { return name }
            return nil
        }
        let serviceName = value("OTEL_SERVICE_NAME") ?? fromAttributes ?? configuredServiceName ?? defaultServiceName
        let sampler = value("OTEL_TRACES_SAMPLER").flatMap { TraceSampler(otelName: $0, argument: value("OTEL_TRACES_SAMPLER_ARG")) } ?? .parentBasedRatio(sampleRatio)
        return TracingSettings(endpoint: endpoint, serviceName: serviceName, sampler: sampler, resource: attributes)
    }

    /// `key1=value1,key2=value2` (W3C Baggage-like; values percent-encoded). Malformed members are skipped.
    static func parseResourceAttributes(_ text: String) -> [FinishedSpan.Attribute] {
        text.split(separator: ",").compactMap { member in
            let parts = member.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            let raw = parts[1].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { return nil }
            return FinishedSpan.Attribute(key, .string(raw.removingPercentEncoding ?? raw))
        }
    }
}
