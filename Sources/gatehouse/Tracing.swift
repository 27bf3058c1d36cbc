import GatehouseConfiguration
import GatehouseObservability
import Logging

/// Tracing for one server of this process: its settings (the `tracing:` section and the OpenTelemetry
/// environment variables), its tracer, and its exporter (a service to run; nil when no endpoint is named).
struct ServerTracing {
    let settings: TracingSettings
    let exporter: SpanExporter?
    let tracer: GatehouseTracer
    /// The tracer when spans are exported, else nil: a server that calls nothing further needs no span per request
    /// when the spans go nowhere (the authorization server's token path stays as fast as without tracing).
    var exportingTracer: GatehouseTracer? { exporter == nil ? nil : tracer }
    /// `OTEL_TRACES_SAMPLER` chose the sampler (else `tracing.sample_ratio` does, and a reload may change it).
    let samplerFromEnvironment: Bool

    init(_ configuration: TracingConfiguration, defaultServiceName: String, logger: Logger, environment: [String: String] = Environment.variables()) {
        let settings = TracingSettings.resolve(
            environment: environment, configuredEndpoint: configuration.otlpEndpoint, configuredServiceName: configuration.serviceName,
            sampleRatio: configuration.sampleRatio, defaultServiceName: defaultServiceName
        )
        var exporter: SpanExporter?
        if let endpoint = settings.endpoint {
            logger.notice("exporting spans", metadata: ["service": "\(settings.serviceName)", "endpoint": "\(endpoint)"])
            exporter = SpanExporter(configuration: .init(endpoint: endpoint, resource: settings.resource), logger: logger)
        }
        self.settings = settings
        self.exporter = exporter
        samplerFromEnvironment = environment["OTEL_TRACES_SAMPLER"].map { TraceSampler(otelName: $0, argument: nil) != nil } ?? false
        tracer = GatehouseTracer(sampler: settings.sampler, sink: exporter)
    }
}
